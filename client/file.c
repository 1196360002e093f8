/*
 * file.c: encrypted files through a client (docs/FILE-FORMAT.md): the
 * DEK comes from keywardd (a new one to encrypt, the header's wrapped one
 * unwrapped to read); the format itself is kwfile.c's.
 *
 * The DEK is held only while the file's keys are derived from it: a
 * reader keeps the derived keys (kwfile.c), never the DEK.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "client_internal.h"
#include "keyward.h"
#include "kwfile.h"
#include "text.h"

struct kw_reader {
	int fd;
	struct kwf_header *h;
	struct kwf_reader *r;
};

/* file_error: the client's message for a kwfile failure on path. */
static int
file_error(kw_client *c, int rc, const char *path)
{
	char pbuf[132];
	const char *p = kw_defang(path, 128, pbuf);

	switch (rc) {
	case KW_ERR_AUTH:
		return kw_client_fail(c, rc,
		    "%s: integrity check failed: the file was modified, "
		    "truncated or extended since it was encrypted; do not use "
		    "its contents",
		    p);
	case KW_ERR_FORMAT:
		return kw_client_fail(c, rc,
		    "%s: not an encrypted keyward file, or a newer format "
		    "version than this library reads",
		    p);
	case KW_ERR_INVALID:
		return kw_client_fail(c, rc,
		    "%s: the encrypted file's header is malformed", p);
	case KW_ERR_TOO_LARGE:
		return kw_client_fail(c, rc,
		    "%s: the encrypted file's header is over its size limits",
		    p);
	case KW_ERR_IO:
		return kw_client_fail(c, rc, "%s: %s", p,
		    errno != 0 ? strerror(errno) : "I/O error");
	default:
		return kw_client_fail(c, rc, "%s: %s", p, kw_strerror(rc));
	}
}

static int
open_regular(kw_client *c, const char *path, int *ret_fd, struct stat *st)
{
	char pbuf[132];
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return kw_client_fail(c,
		    errno == ENOENT ? KW_ERR_NOT_FOUND : KW_ERR_IO, "%s: %s",
		    kw_defang(path, 128, pbuf), strerror(errno));
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		return kw_client_fail(c, KW_ERR_INVALID,
		    "%s: not a regular file", kw_defang(path, 128, pbuf));
	}
	*ret_fd = fd;
	return KW_OK;
}

/*
 * out_temp: a temporary file (mode 0600) in out_path's directory, so that
 * rename() puts the whole result in place or nothing.
 */
static int
out_temp(kw_client *c, const char *out_path, char *tmp, size_t tmplen,
    int *ret_fd)
{
	char pbuf[132], *copy, *base;
	int fd, n;

	copy = strdup(out_path);
	if (copy == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	base = basename(copy);
	n = snprintf(tmp, tmplen, "%.*s.%s.XXXXXX",
	    (int)(strlen(out_path) - strlen(base)), out_path, base);
	free(copy);
	if (n < 0 || (size_t)n >= tmplen)
		return kw_client_fail(c, KW_ERR_INVALID, "%s: path too long",
		    kw_defang(out_path, 128, pbuf));
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return kw_client_fail(c, KW_ERR_IO,
		    "%s: cannot create a file "
		    "beside it: %s",
		    kw_defang(out_path, 128, pbuf), strerror(errno));
	*ret_fd = fd;
	return KW_OK;
}

/* commit_temp: fsync, rename over out_path, fsync the directory. */
static int
commit_temp(kw_client *c, int fd, const char *tmp, const char *out_path)
{
	char pbuf[132], *copy;
	int dfd;

	if (fsync(fd) != 0 || rename(tmp, out_path) != 0)
		return kw_client_fail(c, KW_ERR_IO, "%s: %s",
		    kw_defang(out_path, 128, pbuf), strerror(errno));
	copy = strdup(out_path);
	if (copy != NULL) {
		dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
		free(copy);
	}
	return KW_OK;
}

int
kw_file_encrypt(kw_client *c, const char *in_path, const char *out_path,
    const char *key_name, const struct kw_context_pair *ctx, size_t nctx,
    const struct kw_file_options *opt)
{
	struct kw_file_options none = {0};
	char tmp[PATH_MAX];
	struct stat in_st, out_st;
	kw_datakey *dk = NULL;
	int in_fd = -1, out_fd = -1, rc;
	size_t deklen;

	if (c == NULL || in_path == NULL || out_path == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	if (opt == NULL)
		opt = &none;
	if (opt->chunk_size != 0 &&
	    (opt->chunk_size < KWF_CHUNK_MIN ||
	        opt->chunk_size > KWF_CHUNK_MAX ||
	        (opt->chunk_size & (opt->chunk_size - 1)) != 0))
		return kw_client_fail(c, KW_ERR_INVALID,
		    "chunk size: a power of two from %u to %u bytes",
		    KWF_CHUNK_MIN, KWF_CHUNK_MAX);
	rc = open_regular(c, in_path, &in_fd, &in_st);
	if (rc != KW_OK)
		return rc;
	if (stat(out_path, &out_st) == 0 && out_st.st_dev == in_st.st_dev &&
	    out_st.st_ino == in_st.st_ino) {
		rc = kw_client_fail(c, KW_ERR_INVALID,
		    "the output would replace the input: choose another path");
		goto out;
	}
	rc = kw_datakey_generate(c, key_name, ctx, nctx, &dk);
	if (rc != KW_OK)
		goto out;
	rc = out_temp(c, out_path, tmp, sizeof tmp, &out_fd);
	if (rc != KW_OK)
		goto out;
	struct kwf_meta m = {
	    .key_name = kw_datakey_key_name(dk),
	    .key_version = (uint32_t)kw_datakey_key_version(dk),
	    .wrapped = kw_datakey_wrapped(dk),
	    .ctx = ctx,
	    .nctx = nctx,
	    .chunk_size = opt->chunk_size,
	};
	errno = 0;
	rc =
	    kwf_encrypt_fd(in_fd, out_fd, &m, kw_datakey_plaintext(dk, &deklen),
	        opt->threads, opt->progress, opt->progress_arg);
	kw_datakey_free(dk);
	dk = NULL;
	if (rc != KW_OK) {
		rc = rc == KW_ERR_IO
		    ? file_error(c, rc, in_path)
		    : kw_client_fail(c, rc, "encrypting %s: %s", in_path,
		          kw_strerror(rc));
		goto out;
	}
	rc = commit_temp(c, out_fd, tmp, out_path);
	if (rc == KW_OK)
		tmp[0] = '\0';
out:
	kw_datakey_free(dk);
	if (out_fd >= 0) {
		close(out_fd);
		if (tmp[0] != '\0')
			unlink(tmp);
	}
	if (in_fd >= 0)
		close(in_fd);
	return rc;
}

/* open_reader: the header of fd, its DEK from keywardd, the reader. */
static int
open_reader(kw_client *c, int fd, const char *path, struct kwf_header **ret_h,
    struct kwf_reader **ret_r)
{
	const struct kw_context_pair *ctx;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	kw_datakey *dk = NULL;
	size_t nctx, deklen;
	int rc;

	errno = 0;
	rc = kwf_header_read_fd(fd, &h);
	if (rc != KW_OK)
		return file_error(c, rc, path);
	nctx = kwf_header_context(h, &ctx);
	rc = kw_datakey_decrypt(c, kwf_header_key_name(h),
	    kwf_header_wrapped(h), ctx, nctx, &dk);
	if (rc != KW_OK)
		goto out;
	rc = kwf_reader_open(fd, h, kw_datakey_plaintext(dk, &deklen), &r);
	kw_datakey_free(dk);
	if (rc != KW_OK) {
		rc = file_error(c, rc, path);
		goto out;
	}
	*ret_h = h;
	*ret_r = r;
	return KW_OK;
out:
	kwf_header_free(h);
	return rc;
}

int
kw_file_decrypt(kw_client *c, const char *in_path, const char *out_path,
    unsigned long long off, unsigned long long len,
    const struct kw_file_options *opt)
{
	struct kw_file_options none = {0};
	char tmp[PATH_MAX] = "";
	struct stat st;
	struct kwf_header *h = NULL;
	struct kwf_reader *r = NULL;
	int in_fd = -1, out_fd = -1, rc;
	bool to_stdout;

	if (c == NULL || in_path == NULL || out_path == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	if (opt == NULL)
		opt = &none;
	to_stdout = strcmp(out_path, "-") == 0;
	rc = open_regular(c, in_path, &in_fd, &st);
	if (rc != KW_OK)
		return rc;
	rc = open_reader(c, in_fd, in_path, &h, &r);
	if (rc != KW_OK)
		goto out;
	if (off > kwf_reader_size(r)) {
		rc = kw_client_fail(c, KW_ERR_INVALID,
		    "range: starts at %llu, after the end of the plaintext "
		    "(%llu bytes)",
		    off, (unsigned long long)kwf_reader_size(r));
		goto out;
	}
	if (to_stdout) {
		out_fd = STDOUT_FILENO;
	} else {
		rc = out_temp(c, out_path, tmp, sizeof tmp, &out_fd);
		if (rc != KW_OK)
			goto out;
	}
	errno = 0;
	rc = kwf_reader_decrypt_fd(r, out_fd, off, len, opt->threads,
	    opt->progress, opt->progress_arg);
	if (rc != KW_OK) {
		rc = rc == KW_ERR_IO && errno != 0
		    ? kw_client_fail(c, rc, "writing %s: %s",
		          to_stdout ? "standard output" : out_path,
		          strerror(errno))
		    : file_error(c, rc, in_path);
		goto out;
	}
	if (!to_stdout) {
		rc = commit_temp(c, out_fd, tmp, out_path);
		if (rc == KW_OK)
			tmp[0] = '\0';
	}
out:
	if (out_fd >= 0 && !to_stdout) {
		close(out_fd);
		if (tmp[0] != '\0')
			unlink(tmp);
	}
	kwf_reader_free(r);
	kwf_header_free(h);
	if (in_fd >= 0)
		close(in_fd);
	return rc;
}

int
kw_reader_open(kw_client *c, const char *path, kw_reader **ret_reader)
{
	struct stat st;
	kw_reader *kr;
	int rc;

	if (c == NULL || path == NULL || ret_reader == NULL)
		return KW_ERR_INVALID;
	kw_client_clear(c);
	kr = calloc(1, sizeof *kr);
	if (kr == NULL)
		return kw_client_fail(c, KW_ERR_NOMEM, "out of memory");
	rc = open_regular(c, path, &kr->fd, &st);
	if (rc != KW_OK) {
		free(kr);
		return rc;
	}
	rc = open_reader(c, kr->fd, path, &kr->h, &kr->r);
	if (rc != KW_OK) {
		close(kr->fd);
		free(kr);
		return rc;
	}
	*ret_reader = kr;
	return KW_OK;
}

int
kw_reader_pread(kw_reader *r, void *buf, size_t len, unsigned long long off,
    size_t *ret_n)
{
	if (r == NULL || (buf == NULL && len > 0) || ret_n == NULL)
		return KW_ERR_INVALID;
	return kwf_reader_pread(r->r, buf, len, off, ret_n);
}

unsigned long long
kw_reader_size(const kw_reader *r)
{
	return r == NULL ? 0 : kwf_reader_size(r->r);
}

void
kw_reader_close(kw_reader *r)
{
	if (r == NULL)
		return;
	kwf_reader_free(r->r);
	kwf_header_free(r->h);
	close(r->fd);
	free(r);
}

int
kw_audit_verify(const char *path, unsigned long long *ret_records,
    unsigned long long *ret_bad_line, char *err, size_t errlen)
{
	uint64_t count = 0, bad = 0;
	int rc;

	if (path == NULL)
		return KW_ERR_INVALID;
	rc = kwd_audit_verify(path, &count, &bad, err, errlen);
	if (ret_records != NULL)
		*ret_records = rc == KW_OK ? count : 0;
	if (ret_bad_line != NULL)
		*ret_bad_line = rc == KW_OK ? 0 : bad;
	return rc;
}
