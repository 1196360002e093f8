/*
 * Compiled by CTest three ways: CASE_ok must compile; CASE_secret and
 * CASE_bytes must not, because log fields accept no secret type.
 */
#include "log.h"
#include "secret.h"

void f(struct kw_secret *s);

void
f(struct kw_secret *s)
{
#if defined(CASE_ok)
	(void)s;
	kw_log(KW_LOG_INFO, "t", "m", KW_F("name", "value"), KW_F("n", 1));
#elif defined(CASE_secret)
	kw_log(KW_LOG_INFO, "t", "m", KW_F("dek", s));
#elif defined(CASE_bytes)
	kw_log(KW_LOG_INFO, "t", "m", KW_F("dek", kw_secret_data(s)));
#endif
}
