/*
 * replay.c: run a libFuzzer target over files without libFuzzer, so that
 * CI replays the corpora with any compiler (gcc, normal and ASan+UBSan).
 *
 *   replay_<target> PATH...
 *
 * Each PATH is a file or a directory (walked recursively, in sorted
 * order); every regular file is read whole into a heap buffer of exactly
 * its size and passed once to LLVMFuzzerTestOneInput(). Prints the number
 * of inputs run. Exit status: 0, or 1 if a path could not be read (the
 * other paths are still run); a bug in the target aborts, as under
 * libFuzzer.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as under libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static unsigned long nrun;

static int
read_all(const char *path, unsigned char **ret_buf, size_t *ret_len)
{
	unsigned char *buf = NULL;
	size_t len = 0, cap = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0)
		return -1;
	for (;;) {
		ssize_t r;

		if (len == cap) {
			size_t ncap = cap ? cap * 2 : 4096;
			unsigned char *nb = realloc(buf, ncap);

			if (nb == NULL)
				goto fail;
			buf = nb;
			cap = ncap;
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto fail;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	*ret_buf = buf;
	*ret_len = len;
	return 0;
fail:
	free(buf);
	close(fd);
	return -1;
}

static int
run_file(const char *path)
{
	unsigned char *buf, *exact;
	size_t len;

	if (read_all(path, &buf, &len) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	/* A buffer of exactly len bytes: ASan then flags any overread. */
	exact = malloc(len ? len : 1);
	if (exact == NULL) {
		free(buf);
		fprintf(stderr, "replay: %s: out of memory\n", path);
		return -1;
	}
	if (len > 0)
		memcpy(exact, buf, len);
	free(buf);
	LLVMFuzzerTestOneInput(exact, len);
	free(exact);
	nrun++;
	return 0;
}

static int
run_path(const char *path)
{
	struct stat st;
	struct dirent **ents;
	int n, rv = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (S_ISREG(st.st_mode))
		return run_file(path);
	if (!S_ISDIR(st.st_mode))
		return 0; /* neither file nor directory: not an input */
	n = scandir(path, &ents, NULL, alphasort);
	if (n < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	for (int i = 0; i < n; i++) {
		const char *name = ents[i]->d_name;

		if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
			size_t sz = strlen(path) + strlen(name) + 2;
			char *sub = malloc(sz);

			if (sub == NULL) {
				rv = -1;
			} else {
				snprintf(sub, sz, "%s/%s", path, name);
				if (run_path(sub) != 0)
					rv = -1;
				free(sub);
			}
		}
		free(ents[i]);
	}
	free(ents);
	return rv;
}

int
main(int argc, char **argv)
{
	int rv = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (run_path(argv[i]) != 0)
			rv = 1;
	printf("replay: %lu input%s run\n", nrun, nrun == 1 ? "" : "s");
	return rv;
}
