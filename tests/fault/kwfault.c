/*
 * kwfault: a fault-injecting PKCS#11 module, for tests only.
 *
 * The module loads a real PKCS#11 module and hands out a function list
 * whose every entry forwards to it.  A single fault rule, taken from the
 * environment and optionally re-read from a file that another process may
 * rewrite at any time, makes chosen calls fail with a chosen CKR_* value
 * and/or sleep before they run, so that error and timeout paths of the key
 * broker can be exercised against an otherwise real token.
 *
 * Interface (environment, read on first use):
 *   KWFAULT_MODULE    real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   KWFAULT_FUNC      function name, or "*" for all but C_GetFunctionList
 *   KWFAULT_RV        CKR_* name, or decimal / 0x-hex number (default 0)
 *   KWFAULT_NTH       first affected matching call, 1-based (default 1)
 *   KWFAULT_TIMES     affected calls from nth on, 0 = unlimited (default 0)
 *   KWFAULT_SLEEP_MS  sleep before each affected call (default 0)
 *   KWFAULT_FILE      rule file with lines func=, rv=, nth=, times=,
 *                     sleep_ms= ('#' comments, blanks trimmed).  If it
 *                     exists on first use it replaces the environment's
 *                     rule; after that every change (including creation
 *                     and removal; missing or empty = no fault) replaces
 *                     the rule and restarts the nth/times count.
 *
 * An affected call sleeps sleep_ms, then returns rv without reaching the
 * real module unless rv is CKR_OK.  An invalid rule prints one line to
 * stderr and injects nothing.
 *
 * Exported besides C_GetFunctionList, for in-process tests via dlsym():
 *   unsigned long kwfault_calls(const char *func);
 *   void kwfault_reset_calls(void);
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* st_mtim, nanosleep, strdup under -std=c11 */
#endif

#include <sys/stat.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define KW_PUBLIC __attribute__((visibility("default")))
#define KW_DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define KW_FILE_MAX 8192 /* rule files are a handful of lines */

/*
 * Every PKCS#11 v2.40 entry point except C_GetFunctionList, in the order
 * of CK_FUNCTION_LIST, with its parameter list and the argument list to
 * pass on.  The forwarders, the function list and the name table are all
 * generated from this one list so that they cannot drift apart; assigning
 * the forwarders into CK_FUNCTION_LIST makes the compiler check every
 * signature against the header.
 */
/* One entry a line, as in the header: not reflowed. */
/* clang-format off */
#define KW_FUNCS(X)							\
	X(C_Initialize, (CK_VOID_PTR init), (init))			\
	X(C_Finalize, (CK_VOID_PTR rsv), (rsv))				\
	X(C_GetInfo, (CK_INFO_PTR info), (info))			\
	X(C_GetSlotList,						\
	    (CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR n),	\
	    (present, list, n))						\
	X(C_GetSlotInfo, (CK_SLOT_ID slot, CK_SLOT_INFO_PTR info),	\
	    (slot, info))						\
	X(C_GetTokenInfo, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info),	\
	    (slot, info))						\
	X(C_GetMechanismList,						\
	    (CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR n), \
	    (slot, list, n))						\
	X(C_GetMechanismInfo,						\
	    (CK_SLOT_ID slot, CK_MECHANISM_TYPE type,			\
	    CK_MECHANISM_INFO_PTR info),				\
	    (slot, type, info))						\
	X(C_InitToken,							\
	    (CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG pinl,	\
	    CK_UTF8CHAR_PTR label),					\
	    (slot, pin, pinl, label))					\
	X(C_InitPIN,							\
	    (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR pin, CK_ULONG pinl),	\
	    (s, pin, pinl))						\
	X(C_SetPIN,							\
	    (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR opin, CK_ULONG opinl,	\
	    CK_UTF8CHAR_PTR npin, CK_ULONG npinl),			\
	    (s, opin, opinl, npin, npinl))				\
	X(C_OpenSession,						\
	    (CK_SLOT_ID slot, CK_FLAGS fl, CK_VOID_PTR app,		\
	    CK_NOTIFY notify, CK_SESSION_HANDLE_PTR sp),		\
	    (slot, fl, app, notify, sp))				\
	X(C_CloseSession, (CK_SESSION_HANDLE s), (s))			\
	X(C_CloseAllSessions, (CK_SLOT_ID slot), (slot))		\
	X(C_GetSessionInfo,						\
	    (CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR info),		\
	    (s, info))							\
	X(C_GetOperationState,						\
	    (CK_SESSION_HANDLE s, CK_BYTE_PTR st, CK_ULONG_PTR stl),	\
	    (s, st, stl))						\
	X(C_SetOperationState,						\
	    (CK_SESSION_HANDLE s, CK_BYTE_PTR st, CK_ULONG stl,		\
	    CK_OBJECT_HANDLE ek, CK_OBJECT_HANDLE ak),			\
	    (s, st, stl, ek, ak))					\
	X(C_Login,							\
	    (CK_SESSION_HANDLE s, CK_USER_TYPE ut, CK_UTF8CHAR_PTR pin,	\
	    CK_ULONG pinl),						\
	    (s, ut, pin, pinl))						\
	X(C_Logout, (CK_SESSION_HANDLE s), (s))				\
	X(C_CreateObject,						\
	    (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG tn,	\
	    CK_OBJECT_HANDLE_PTR op),					\
	    (s, t, tn, op))						\
	X(C_CopyObject,							\
	    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, \
	    CK_ULONG tn, CK_OBJECT_HANDLE_PTR op),			\
	    (s, o, t, tn, op))						\
	X(C_DestroyObject, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o),	\
	    (s, o))							\
	X(C_GetObjectSize,						\
	    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ULONG_PTR sz),	\
	    (s, o, sz))							\
	X(C_GetAttributeValue,						\
	    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, \
	    CK_ULONG tn),						\
	    (s, o, t, tn))						\
	X(C_SetAttributeValue,						\
	    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t, \
	    CK_ULONG tn),						\
	    (s, o, t, tn))						\
	X(C_FindObjectsInit,						\
	    (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR t, CK_ULONG tn),	\
	    (s, t, tn))							\
	X(C_FindObjects,						\
	    (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR op, CK_ULONG max, \
	    CK_ULONG_PTR n),						\
	    (s, op, max, n))						\
	X(C_FindObjectsFinal, (CK_SESSION_HANDLE s), (s))		\
	X(C_EncryptInit,						\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), \
	    (s, m, k))							\
	X(C_Encrypt, KW_P_INOUT, KW_A_INOUT)				\
	X(C_EncryptUpdate, KW_P_INOUT, KW_A_INOUT)			\
	X(C_EncryptFinal, KW_P_OUT, KW_A_OUT)				\
	X(C_DecryptInit,						\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), \
	    (s, m, k))							\
	X(C_Decrypt, KW_P_INOUT, KW_A_INOUT)				\
	X(C_DecryptUpdate, KW_P_INOUT, KW_A_INOUT)			\
	X(C_DecryptFinal, KW_P_OUT, KW_A_OUT)				\
	X(C_DigestInit, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m),	\
	    (s, m))							\
	X(C_Digest, KW_P_INOUT, KW_A_INOUT)				\
	X(C_DigestUpdate, KW_P_IN, KW_A_IN)				\
	X(C_DigestKey, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k), (s, k)) \
	X(C_DigestFinal, KW_P_OUT, KW_A_OUT)				\
	X(C_SignInit,							\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), \
	    (s, m, k))							\
	X(C_Sign, KW_P_INOUT, KW_A_INOUT)				\
	X(C_SignUpdate, KW_P_IN, KW_A_IN)				\
	X(C_SignFinal, KW_P_OUT, KW_A_OUT)				\
	X(C_SignRecoverInit,						\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), \
	    (s, m, k))							\
	X(C_SignRecover, KW_P_INOUT, KW_A_INOUT)			\
	X(C_VerifyInit,							\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), \
	    (s, m, k))							\
	X(C_Verify,							\
	    (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl,		\
	    CK_BYTE_PTR sig, CK_ULONG sigl),				\
	    (s, in, inl, sig, sigl))					\
	X(C_VerifyUpdate, KW_P_IN, KW_A_IN)				\
	X(C_VerifyFinal, KW_P_IN, KW_A_IN)				\
	X(C_VerifyRecoverInit,						\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k), \
	    (s, m, k))							\
	X(C_VerifyRecover, KW_P_INOUT, KW_A_INOUT)			\
	X(C_DigestEncryptUpdate, KW_P_INOUT, KW_A_INOUT)		\
	X(C_DecryptDigestUpdate, KW_P_INOUT, KW_A_INOUT)		\
	X(C_SignEncryptUpdate, KW_P_INOUT, KW_A_INOUT)			\
	X(C_DecryptVerifyUpdate, KW_P_INOUT, KW_A_INOUT)		\
	X(C_GenerateKey,						\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, \
	    CK_ULONG tn, CK_OBJECT_HANDLE_PTR kp),			\
	    (s, m, t, tn, kp))						\
	X(C_GenerateKeyPair,						\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m,			\
	    CK_ATTRIBUTE_PTR pt, CK_ULONG ptn,				\
	    CK_ATTRIBUTE_PTR qt, CK_ULONG qtn,				\
	    CK_OBJECT_HANDLE_PTR pk, CK_OBJECT_HANDLE_PTR qk),		\
	    (s, m, pt, ptn, qt, qtn, pk, qk))				\
	X(C_WrapKey,							\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE wk, \
	    CK_OBJECT_HANDLE k, CK_BYTE_PTR out, CK_ULONG_PTR outl),	\
	    (s, m, wk, k, out, outl))					\
	X(C_UnwrapKey,							\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE uk, \
	    CK_BYTE_PTR in, CK_ULONG inl, CK_ATTRIBUTE_PTR t,		\
	    CK_ULONG tn, CK_OBJECT_HANDLE_PTR kp),			\
	    (s, m, uk, in, inl, t, tn, kp))				\
	X(C_DeriveKey,							\
	    (CK_SESSION_HANDLE s, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE bk, \
	    CK_ATTRIBUTE_PTR t, CK_ULONG tn, CK_OBJECT_HANDLE_PTR kp),	\
	    (s, m, bk, t, tn, kp))					\
	X(C_SeedRandom, KW_P_IN, KW_A_IN)				\
	X(C_GenerateRandom, KW_P_IN, KW_A_IN)				\
	X(C_GetFunctionStatus, (CK_SESSION_HANDLE s), (s))		\
	X(C_CancelFunction, (CK_SESSION_HANDLE s), (s))			\
	X(C_WaitForSlotEvent,						\
	    (CK_FLAGS fl, CK_SLOT_ID_PTR slot, CK_VOID_PTR rsv),	\
	    (fl, slot, rsv))
/* clang-format on */

/* The three shapes shared by most of the data-processing calls. */
#define KW_P_IN (CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl)
#define KW_A_IN (s, in, inl)
#define KW_P_OUT (CK_SESSION_HANDLE s, CK_BYTE_PTR out, CK_ULONG_PTR outl)
#define KW_A_OUT (s, out, outl)
#define KW_P_INOUT                                                           \
	(CK_SESSION_HANDLE s, CK_BYTE_PTR in, CK_ULONG inl, CK_BYTE_PTR out, \
	    CK_ULONG_PTR outl)
#define KW_A_INOUT (s, in, inl, out, outl)

/* Function indices; C_GetFunctionList is last so the list above stays 1:1. */
enum {
#define KW_ENUM(name, proto, argv) KW_IDX_##name,
	KW_FUNCS(KW_ENUM)
#undef KW_ENUM
	    KW_IDX_C_GetFunctionList,
	KW_NFUNCS
};

/* Catch a forgotten or extra entry: v2.40 has exactly 68 functions. */
_Static_assert(KW_NFUNCS == 68, "PKCS#11 v2.40 has 68 functions");
_Static_assert(sizeof(CK_FUNCTION_LIST) ==
        offsetof(CK_FUNCTION_LIST, C_Initialize) + 68 * sizeof(CK_C_Initialize),
    "CK_FUNCTION_LIST does not have 68 entries");

static const char *const kw_names[KW_NFUNCS] = {
#define KW_NAME(name, proto, argv) #name,
    KW_FUNCS(KW_NAME)
#undef KW_NAME
        "C_GetFunctionList",
};

/* Every CKR_* the header defines, so rules can name any of them. */
/* One entry a line, as in the header: not reflowed. */
/* clang-format off */
#define KW_CKRS(X)							\
	X(CKR_OK) X(CKR_CANCEL) X(CKR_HOST_MEMORY) X(CKR_SLOT_ID_INVALID) \
	X(CKR_GENERAL_ERROR) X(CKR_FUNCTION_FAILED) X(CKR_ARGUMENTS_BAD) \
	X(CKR_NO_EVENT) X(CKR_NEED_TO_CREATE_THREADS) X(CKR_CANT_LOCK)	\
	X(CKR_ATTRIBUTE_READ_ONLY) X(CKR_ATTRIBUTE_SENSITIVE)		\
	X(CKR_ATTRIBUTE_TYPE_INVALID) X(CKR_ATTRIBUTE_VALUE_INVALID)	\
	X(CKR_ACTION_PROHIBITED) X(CKR_DATA_INVALID) X(CKR_DATA_LEN_RANGE) \
	X(CKR_DEVICE_ERROR) X(CKR_DEVICE_MEMORY) X(CKR_DEVICE_REMOVED)	\
	X(CKR_ENCRYPTED_DATA_INVALID) X(CKR_ENCRYPTED_DATA_LEN_RANGE)	\
	X(CKR_FUNCTION_CANCELED) X(CKR_FUNCTION_NOT_PARALLEL)		\
	X(CKR_FUNCTION_NOT_SUPPORTED) X(CKR_KEY_HANDLE_INVALID)		\
	X(CKR_KEY_SIZE_RANGE) X(CKR_KEY_TYPE_INCONSISTENT)		\
	X(CKR_KEY_NOT_NEEDED) X(CKR_KEY_CHANGED) X(CKR_KEY_NEEDED)	\
	X(CKR_KEY_INDIGESTIBLE) X(CKR_KEY_FUNCTION_NOT_PERMITTED)	\
	X(CKR_KEY_NOT_WRAPPABLE) X(CKR_KEY_UNEXTRACTABLE)		\
	X(CKR_MECHANISM_INVALID) X(CKR_MECHANISM_PARAM_INVALID)		\
	X(CKR_OBJECT_HANDLE_INVALID) X(CKR_OPERATION_ACTIVE)		\
	X(CKR_OPERATION_NOT_INITIALIZED) X(CKR_PIN_INCORRECT)		\
	X(CKR_PIN_INVALID) X(CKR_PIN_LEN_RANGE) X(CKR_PIN_EXPIRED)	\
	X(CKR_PIN_LOCKED) X(CKR_SESSION_CLOSED) X(CKR_SESSION_COUNT)	\
	X(CKR_SESSION_HANDLE_INVALID) X(CKR_SESSION_PARALLEL_NOT_SUPPORTED) \
	X(CKR_SESSION_READ_ONLY) X(CKR_SESSION_EXISTS)			\
	X(CKR_SESSION_READ_ONLY_EXISTS) X(CKR_SESSION_READ_WRITE_SO_EXISTS) \
	X(CKR_SIGNATURE_INVALID) X(CKR_SIGNATURE_LEN_RANGE)		\
	X(CKR_TEMPLATE_INCOMPLETE) X(CKR_TEMPLATE_INCONSISTENT)		\
	X(CKR_TOKEN_NOT_PRESENT) X(CKR_TOKEN_NOT_RECOGNIZED)		\
	X(CKR_TOKEN_WRITE_PROTECTED) X(CKR_UNWRAPPING_KEY_HANDLE_INVALID) \
	X(CKR_UNWRAPPING_KEY_SIZE_RANGE)				\
	X(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)				\
	X(CKR_USER_ALREADY_LOGGED_IN) X(CKR_USER_NOT_LOGGED_IN)		\
	X(CKR_USER_PIN_NOT_INITIALIZED) X(CKR_USER_TYPE_INVALID)	\
	X(CKR_USER_ANOTHER_ALREADY_LOGGED_IN) X(CKR_USER_TOO_MANY_TYPES) \
	X(CKR_WRAPPED_KEY_INVALID) X(CKR_WRAPPED_KEY_LEN_RANGE)		\
	X(CKR_WRAPPING_KEY_HANDLE_INVALID) X(CKR_WRAPPING_KEY_SIZE_RANGE) \
	X(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)				\
	X(CKR_RANDOM_SEED_NOT_SUPPORTED) X(CKR_RANDOM_NO_RNG)		\
	X(CKR_DOMAIN_PARAMS_INVALID) X(CKR_CURVE_NOT_SUPPORTED)		\
	X(CKR_BUFFER_TOO_SMALL) X(CKR_SAVED_STATE_INVALID)		\
	X(CKR_INFORMATION_SENSITIVE) X(CKR_STATE_UNSAVEABLE)		\
	X(CKR_CRYPTOKI_NOT_INITIALIZED) X(CKR_CRYPTOKI_ALREADY_INITIALIZED) \
	X(CKR_MUTEX_BAD) X(CKR_MUTEX_NOT_LOCKED) X(CKR_NEW_PIN_MODE)	\
	X(CKR_NEXT_OTP) X(CKR_EXCEEDED_MAX_ITERATIONS)			\
	X(CKR_FIPS_SELF_TEST_FAILED) X(CKR_LIBRARY_LOAD_FAILED)		\
	X(CKR_PIN_TOO_WEAK) X(CKR_PUBLIC_KEY_INVALID)			\
	X(CKR_FUNCTION_REJECTED) X(CKR_VENDOR_DEFINED)
/* clang-format on */

static const struct {
	const char *name;
	CK_RV rv;
} kw_ckrs[] = {
#define KW_CKR(name) {#name, name},
    KW_CKRS(KW_CKR)
#undef KW_CKR
};

struct kw_rule {
	int active; /* a valid func was given */
	int func; /* index, or -1 for "*" */
	CK_RV rv;
	unsigned long nth;
	unsigned long times;
	unsigned long sleep_ms;
};

/*
 * What the rule file looked like when it was last read.  The content is
 * kept because stat() alone can miss a change: file timestamps come from
 * a coarse clock, and a freed inode number may be handed straight to the
 * next temporary file, so two quick same-sized rewrites can look
 * identical.  While the file is that young we compare content too.
 */
struct kw_snap {
	int exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtim;
	struct timespec ctim;
	struct timespec verified; /* CLOCK_REALTIME before last read */
	size_t len;
	char buf[KW_FILE_MAX];
};

KW_PUBLIC CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR);
KW_PUBLIC unsigned long kwfault_calls(const char *);
KW_PUBLIC void kwfault_reset_calls(void);

/* kw_lock covers the rule, the counters and the snapshot. */
static pthread_mutex_t kw_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t kw_once = PTHREAD_ONCE_INIT;
static CK_RV kw_init_rv = CKR_GENERAL_ERROR;
static CK_FUNCTION_LIST_PTR kw_real;
static char *kw_file;
static struct kw_rule kw_rule;
static unsigned long kw_matched; /* matching calls since rule load */
static unsigned long kw_calls[KW_NFUNCS];
static struct kw_snap kw_snap;
static char kw_rbuf[KW_FILE_MAX + 1]; /* scratch for reads */

static int
kw_func_index(const char *name)
{
	int i;

	for (i = 0; i < KW_NFUNCS; i++)
		if (strcmp(kw_names[i], name) == 0)
			return i;
	return -1;
}

/*
 * Parse an unsigned number: decimal, or hex with 0x.  strtoul() alone
 * would take a sign, leading blanks and octal, none of which a rule
 * writer means.
 */
static int
kw_parse_ulong(const char *s, int allow_hex, unsigned long *out)
{
	unsigned long v;
	char *end;
	int base = 10;

	if (allow_hex && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (*s == '\0' || (base == 10 && (*s < '0' || *s > '9')))
		return -1;
	if (base == 16 && strchr("0123456789abcdefABCDEF", *s) == NULL)
		return -1;
	errno = 0;
	v = strtoul(s, &end, base);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

/* Apply one key=value to r; print a line and fail on anything unknown. */
static int
kw_rule_set(struct kw_rule *r, const char *origin, const char *key,
    const char *val)
{
	unsigned long v;
	size_t i;

	if (strcmp(key, "func") == 0) {
		if (strcmp(val, "*") == 0) {
			r->func = -1;
		} else if ((r->func = kw_func_index(val)) < 0) {
			fprintf(stderr,
			    "kwfault: %s: unknown function '%s'; "
			    "no fault\n",
			    origin, val);
			return -1;
		}
		r->active = 1;
		return 0;
	}
	if (strcmp(key, "rv") == 0) {
		for (i = 0; i < sizeof(kw_ckrs) / sizeof(kw_ckrs[0]); i++) {
			if (strcmp(kw_ckrs[i].name, val) == 0) {
				r->rv = kw_ckrs[i].rv;
				return 0;
			}
		}
		if (kw_parse_ulong(val, 1, &v) == 0) {
			r->rv = v;
			return 0;
		}
		fprintf(stderr, "kwfault: %s: unknown rv '%s'; no fault\n",
		    origin, val);
		return -1;
	}
	if (strcmp(key, "nth") == 0 || strcmp(key, "times") == 0 ||
	    strcmp(key, "sleep_ms") == 0) {
		if (kw_parse_ulong(val, 0, &v) != 0 ||
		    (key[0] == 'n' && v == 0)) {
			fprintf(stderr, "kwfault: %s: bad %s '%s'; no fault\n",
			    origin, key, val);
			return -1;
		}
		if (key[0] == 'n')
			r->nth = v;
		else if (key[0] == 't')
			r->times = v;
		else
			r->sleep_ms = v;
		return 0;
	}
	fprintf(stderr, "kwfault: %s: unknown key '%s'; no fault\n", origin,
	    key);
	return -1;
}

static void
kw_rule_clear(struct kw_rule *r)
{
	memset(r, 0, sizeof(*r));
	r->rv = CKR_OK;
	r->nth = 1;
}

/* Install a new rule; the nth/times window restarts with it. */
static void
kw_install(const struct kw_rule *r)
{
	kw_rule = *r;
	kw_matched = 0;
}

static void
kw_load_env(void)
{
	static const struct {
		const char *var;
		const char *key;
	} vars[] = {
	    {"KWFAULT_FUNC", "func"},
	    {"KWFAULT_RV", "rv"},
	    {"KWFAULT_NTH", "nth"},
	    {"KWFAULT_TIMES", "times"},
	    {"KWFAULT_SLEEP_MS", "sleep_ms"},
	};
	struct kw_rule r;
	const char *val;
	size_t i;

	kw_rule_clear(&r);
	if (getenv("KWFAULT_FUNC") == NULL)
		return;
	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		if ((val = getenv(vars[i].var)) == NULL)
			continue;
		if (kw_rule_set(&r, vars[i].var, vars[i].key, val) != 0)
			return;
	}
	kw_install(&r);
}

static char *
kw_trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t' || *s == '\r')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

/* Parse the NUL-terminated file text in buf (modified in place). */
static void
kw_parse_file(char *buf, struct kw_rule *r)
{
	char *line, *next, *eq, *key;
	int any = 0;

	kw_rule_clear(r);
	for (line = buf; line != NULL; line = next) {
		if ((next = strchr(line, '\n')) != NULL)
			*next++ = '\0';
		line = kw_trim(line);
		if (*line == '\0' || *line == '#')
			continue;
		if ((eq = strchr(line, '=')) == NULL) {
			fprintf(stderr,
			    "kwfault: %s: line '%s' has no '='; "
			    "no fault\n",
			    kw_file, line);
			goto invalid;
		}
		*eq = '\0';
		key = kw_trim(line);
		if (kw_rule_set(r, kw_file, key, kw_trim(eq + 1)) != 0)
			goto invalid;
		any = 1;
	}
	if (any && !r->active)
		fprintf(stderr, "kwfault: %s: no func; no fault\n", kw_file);
	return;
invalid:
	kw_rule_clear(r);
}

static int
kw_ts_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static int
kw_same_id(const struct stat *st)
{
	return kw_snap.exists && st->st_dev == kw_snap.dev &&
	    st->st_ino == kw_snap.ino && st->st_size == kw_snap.size &&
	    kw_ts_eq(&st->st_mtim, &kw_snap.mtim) &&
	    kw_ts_eq(&st->st_ctim, &kw_snap.ctim);
}

/*
 * A snapshot is "racy" while the file's timestamps are within a second
 * of our last read: a rewrite in that window may leave stat() unchanged,
 * so only the content can tell.  The margin dwarfs the coarse timestamp
 * clock's tick; re-reading a few hundred bytes for a second is cheap.
 */
static int
kw_snap_racy(void)
{
	const struct timespec *v = &kw_snap.verified;

	return kw_snap.mtim.tv_sec + 1 > v->tv_sec ||
	    (kw_snap.mtim.tv_sec + 1 == v->tv_sec &&
	        kw_snap.mtim.tv_nsec >= v->tv_nsec) ||
	    kw_snap.ctim.tv_sec + 1 > v->tv_sec ||
	    (kw_snap.ctim.tv_sec + 1 == v->tv_sec &&
	        kw_snap.ctim.tv_nsec >= v->tv_nsec);
}

static void
kw_file_gone(void)
{
	struct kw_rule r;

	kw_rule_clear(&r);
	kw_install(&r);
	kw_snap.exists = 0;
}

/*
 * Read the rule file and install its rule if it differs from the last
 * one read, by identity or by content.  Identity is taken with fstat()
 * on the descriptor we read, so a rename between stat() and open() can
 * only cause one more reload later, never a stale snapshot.
 */
static void
kw_read_file(void)
{
	struct timespec now;
	struct kw_rule r;
	struct stat st;
	ssize_t n;
	size_t len = 0;
	int fd, changed;

	clock_gettime(CLOCK_REALTIME, &now);
	if ((fd = open(kw_file, O_RDONLY | O_CLOEXEC)) < 0) {
		kw_file_gone();
		return;
	}
	if (fstat(fd, &st) != 0) {
		close(fd);
		kw_file_gone();
		return;
	}
	for (;;) {
		n = read(fd, kw_rbuf + len, sizeof(kw_rbuf) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == sizeof(kw_rbuf) - 1)
			break;
	}
	close(fd);

	changed = !kw_same_id(&st) || len != kw_snap.len ||
	    memcmp(kw_rbuf, kw_snap.buf, len) != 0;
	kw_snap.verified = now;
	if (!changed)
		return;

	kw_snap.exists = 1;
	kw_snap.dev = st.st_dev;
	kw_snap.ino = st.st_ino;
	kw_snap.size = st.st_size;
	kw_snap.mtim = st.st_mtim;
	kw_snap.ctim = st.st_ctim;
	kw_snap.len = len < sizeof(kw_snap.buf) ? len : sizeof(kw_snap.buf);
	memcpy(kw_snap.buf, kw_rbuf, kw_snap.len);

	if (n < 0) {
		fprintf(stderr, "kwfault: %s: read: %s; no fault\n", kw_file,
		    strerror(errno));
		kw_rule_clear(&r);
	} else if (len > KW_FILE_MAX - 1) {
		fprintf(stderr,
		    "kwfault: %s: larger than %d bytes; "
		    "no fault\n",
		    kw_file, KW_FILE_MAX - 1);
		kw_rule_clear(&r);
	} else {
		kw_rbuf[len] = '\0';
		kw_parse_file(kw_rbuf, &r);
	}
	kw_install(&r);
}

/* Called with kw_lock held, on every call, when KWFAULT_FILE is set. */
static void
kw_refresh(void)
{
	struct stat st;

	if (stat(kw_file, &st) != 0) {
		if (kw_snap.exists)
			kw_file_gone();
		return;
	}
	if (!kw_same_id(&st) || kw_snap_racy())
		kw_read_file();
}

static void
kw_sleep_ms(unsigned long ms)
{
	struct timespec ts;

	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		continue;
}

/*
 * Common prologue of every entry point: count the call, pick up rule
 * changes, decide whether this call is affected.  Returns 1 with *rvp
 * set when the call must fail without reaching the real module.  The
 * sleep happens after the lock is dropped so that a slow call does not
 * stall unrelated calls on other threads.
 */
static int
kw_enter(int idx, CK_RV *rvp)
{
	unsigned long n, sleep_ms = 0;
	CK_RV rv = CKR_OK;
	int affected = 0;

	pthread_mutex_lock(&kw_lock);
	kw_calls[idx]++;
	if (kw_file != NULL)
		kw_refresh();
	if (kw_rule.active &&
	    (kw_rule.func == idx ||
	        (kw_rule.func == -1 && idx != KW_IDX_C_GetFunctionList))) {
		n = ++kw_matched;
		if (n >= kw_rule.nth &&
		    (kw_rule.times == 0 || n - kw_rule.nth < kw_rule.times)) {
			affected = 1;
			rv = kw_rule.rv;
			sleep_ms = kw_rule.sleep_ms;
		}
	}
	pthread_mutex_unlock(&kw_lock);

	if (!affected)
		return 0;
	if (sleep_ms > 0)
		kw_sleep_ms(sleep_ms);
	if (rv == CKR_OK)
		return 0;
	*rvp = rv;
	return 1;
}

/*
 * The forwarders.  A real module may leave entries it does not implement
 * NULL; report that as the standard "not supported" instead of crashing.
 */
#define KW_FORWARD(name, proto, argv)                      \
	static CK_RV kw_##name proto                       \
	{                                                  \
		CK_RV rv;                                  \
                                                           \
		if (kw_enter(KW_IDX_##name, &rv))          \
			return rv;                         \
		if (kw_real->name == NULL)                 \
			return CKR_FUNCTION_NOT_SUPPORTED; \
		return kw_real->name argv;                 \
	}
KW_FUNCS(KW_FORWARD)
#undef KW_FORWARD

static CK_FUNCTION_LIST kw_list = {
    .version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
#define KW_SLOT(name, proto, argv) .name = kw_##name,
    KW_FUNCS(KW_SLOT)
#undef KW_SLOT
        /* Hand out our own list again, not the real one. */
        .C_GetFunctionList = C_GetFunctionList,
};

/* The module is unloaded and reloaded between tests: free what init
 * allocated, or every reload leaks it. */
__attribute__((destructor)) static void
kw_fini(void)
{
	free(kw_file);
	kw_file = NULL;
}

static void
kw_init(void)
{
	CK_RV (*getlist)(CK_FUNCTION_LIST_PTR_PTR);
	const char *path, *file;
	void *h;
	CK_RV rv;

	kw_rule_clear(&kw_rule);
	kw_load_env();
	if ((file = getenv("KWFAULT_FILE")) != NULL && *file != '\0' &&
	    (kw_file = strdup(file)) == NULL)
		fprintf(stderr,
		    "kwfault: out of memory; KWFAULT_FILE "
		    "ignored\n");
	/*
	 * A file that already exists replaces the environment's rule now;
	 * one that does not leaves it in force until the file appears.
	 */
	if (kw_file != NULL) {
		pthread_mutex_lock(&kw_lock);
		kw_refresh();
		pthread_mutex_unlock(&kw_lock);
	}

	if ((path = getenv("KWFAULT_MODULE")) == NULL || *path == '\0')
		path = KW_DEFAULT_MODULE;
	/* Never dlclose()d: forwarders may run until the process exits. */
	if ((h = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "kwfault: cannot load %s: %s\n", path,
		    dlerror());
		return;
	}
	*(void **)&getlist = dlsym(h, "C_GetFunctionList");
	if (getlist == NULL) {
		fprintf(stderr, "kwfault: %s: no C_GetFunctionList: %s\n", path,
		    dlerror());
		return;
	}
	if ((rv = getlist(&kw_real)) != CKR_OK || kw_real == NULL) {
		fprintf(stderr,
		    "kwfault: %s: C_GetFunctionList failed: "
		    "0x%lx\n",
		    path, (unsigned long)rv);
		kw_real = NULL;
		return;
	}
	/*
	 * Copy the version, except claim no more than 2.x: a 3.x version
	 * would invite callers to read v3.0 entries past the end of our
	 * v2.40-sized list.
	 */
	kw_list.version = kw_real->version;
	if (kw_list.version.major > 2) {
		kw_list.version.major = CRYPTOKI_VERSION_MAJOR;
		kw_list.version.minor = CRYPTOKI_VERSION_MINOR;
	}
	kw_init_rv = CKR_OK;
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	CK_RV rv;

	pthread_once(&kw_once, kw_init);
	if (kw_enter(KW_IDX_C_GetFunctionList, &rv))
		return rv;
	if (kw_init_rv != CKR_OK)
		return kw_init_rv;
	if (ppFunctionList == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppFunctionList = &kw_list;
	return CKR_OK;
}

/* Calls of func since load or the last reset; "*" sums all functions. */
unsigned long
kwfault_calls(const char *func)
{
	unsigned long n = 0;
	int i;

	if (func == NULL)
		return 0;
	pthread_mutex_lock(&kw_lock);
	if (strcmp(func, "*") == 0) {
		for (i = 0; i < KW_NFUNCS; i++)
			n += kw_calls[i];
	} else if ((i = kw_func_index(func)) >= 0) {
		n = kw_calls[i];
	}
	pthread_mutex_unlock(&kw_lock);
	return n;
}

void
kwfault_reset_calls(void)
{
	pthread_mutex_lock(&kw_lock);
	memset(kw_calls, 0, sizeof(kw_calls));
	pthread_mutex_unlock(&kw_lock);
}
