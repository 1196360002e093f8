/*
 * fuzz_msg.c: libFuzzer target for kwd_msg_decode() and the builder.
 *
 * Every input is decoded as a frame from the front and as one from the
 * keeper. A frame accepted is rebuilt field by field with the builder,
 * which must accept it too (the two sides share one rule), must produce
 * the same bytes (the encoding is canonical) and must decode to the same
 * fields. The accessors must agree with the fields. A violation is a bug
 * and aborts, which the fuzzer reports as a crash.
 *
 * Built with -fsanitize=fuzzer (KW_FUZZ=ON) or with tests/fuzz/replay.c
 * (any compiler) to replay the corpus.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "msg.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Static: a kwd_msgbuf is 64 KiB, a kwd_msg 32 KiB. */
static struct kwd_msg m1, m2;
static struct kwd_msgbuf b;

static void
check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_msg: invariant violated: %s\n", what);
		abort();
	}
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static uint32_t
rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	    (uint32_t)p[2] << 8 | p[3];
}

/*
 * What the accessors say about a decoded message. kwd_msg_get() and
 * kwd_msg_count() scan the fields, so only the first SAMPLE fields and
 * the last are checked: all 2000 would make this harness quadratic.
 */
#define SAMPLE 32

static void
check_accessors(const struct kwd_msg *m)
{
	static size_t seen[65536];
	char s[1024];

	for (size_t i = 0; i < m->nfields; i++)
		seen[m->fields[i].tag] = 0;
	for (size_t i = 0; i < m->nfields; i++) {
		const struct kwd_field *f = &m->fields[i];
		size_t idx = seen[f->tag]++;

		if (i >= SAMPLE && i != m->nfields - 1)
			continue;
		check(kwd_msg_get(m, f->tag, idx) == f, "kwd_msg_get order");
		if (kwd_msg_str(m, f->tag, idx, s, sizeof s)) {
			check(f->len < sizeof s && strlen(s) == f->len &&
			        memcmp(s, f->p, f->len) == 0,
			    "kwd_msg_str copies the field");
		}
	}
	for (size_t i = 0; i < m->nfields; i++) {
		const struct kwd_field *f = &m->fields[i];
		uint32_t v32;

		if (i >= SAMPLE && i != m->nfields - 1)
			continue;
		check(kwd_msg_count(m, f->tag) == seen[f->tag],
		    "kwd_msg_count");
		check(kwd_msg_get(m, f->tag, seen[f->tag]) == NULL,
		    "kwd_msg_get past the last");
		if (kwd_msg_u32(m, f->tag, &v32))
			check(kwd_msg_get(m, f->tag, 0)->len == 4 &&
			        v32 == rd32(kwd_msg_get(m, f->tag, 0)->p),
			    "kwd_msg_u32");
	}
}

static void
round_trip(const uint8_t *data, size_t size, enum kwd_msg_dir from)
{
	int rv;

	rv = kwd_msg_decode(data, size, from, &m1);
	if (rv != KW_OK) {
		check(rv == KW_ERR_INVALID || rv == KW_ERR_TOO_LARGE,
		    "failure is KW_ERR_INVALID or KW_ERR_TOO_LARGE");
		check(rv != KW_ERR_TOO_LARGE || size > KWD_MSG_MAX,
		    "KW_ERR_TOO_LARGE only over KWD_MSG_MAX");
		return;
	}
	check(size >= KWD_MSG_HDR && size <= KWD_MSG_MAX, "size in bounds");
	check(kwd_msg_frame_len(data) == size, "frame_len of a valid frame");
	check(m1.nfields <= KWD_MSG_MAX_FIELDS, "nfields bounded");
	check(strcmp(kwd_msg_type_name(m1.type), "UNKNOWN") != 0,
	    "a decoded type has a name");
	/* One side sends each type: the other side never accepts it. */
	check(kwd_msg_decode(data, size,
	          from == KWD_FROM_FRONT ? KWD_FROM_KEEPER : KWD_FROM_FRONT,
	          &m2) == KW_ERR_INVALID,
	    "accepted from both sides");
	for (size_t i = 0; i < m1.nfields; i++)
		check(m1.fields[i].p >= data &&
		        m1.fields[i].p + m1.fields[i].len <= data + size,
		    "field inside the frame");
	check_accessors(&m1);

	kwd_msg_begin(&b, (enum kwd_msg_type)m1.type, m1.rid);
	for (size_t i = 0; i < m1.nfields; i++)
		kwd_msg_put(&b, m1.fields[i].tag, m1.fields[i].p,
		    m1.fields[i].len);
	check(kwd_msg_end(&b) == KW_OK, "the builder accepts a valid frame");
	check(b.len == size && memcmp(b.buf, data, size) == 0,
	    "rebuilt frame is byte-identical");
	check(kwd_msg_decode(b.buf, b.len, from, &m2) == KW_OK,
	    "rebuilt frame decodes");
	check(m2.type == m1.type && m2.rid == m1.rid &&
	        m2.nfields == m1.nfields,
	    "rebuilt header");
	for (size_t i = 0; i < m1.nfields; i++) {
		const struct kwd_field *f1 = &m1.fields[i], *f2 = &m2.fields[i];

		check(f1->tag == f2->tag && f1->len == f2->len &&
		        memcmp(f1->p, f2->p, f1->len) == 0,
		    "rebuilt field");
	}
	kwd_msg_wipe(&b);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t framelen;

	if (size >= KWD_MSG_HDR) {
		framelen = kwd_msg_frame_len(data);
		check(framelen == 0 ||
		        (framelen >= KWD_MSG_HDR && framelen <= KWD_MSG_MAX),
		    "frame_len bounds");
	}
	round_trip(data, size, KWD_FROM_FRONT);
	round_trip(data, size, KWD_FROM_KEEPER);
	return 0;
}
