/*
 * token_key.h: a fixed P-256 key for the token fuzz target and its seed
 * corpus (tests/token_tool.c `corpus`). A test key, public by being here:
 * it signs nothing but fuzz inputs.
 *
 * SPDX-License-Identifier: Apache-2.0
 */
#ifndef KW_TEST_TOKEN_KEY_H
#define KW_TEST_TOKEN_KEY_H

static const char token_fuzz_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgQ5y067lUh+3YSMor\n"
    "SLuFR63PK1+c3+e54P1grvfHDZKhRANCAARlBTouyEbyDDvcBY2QZmDJPc++u3Qi\n"
    "DMBvGKy+grGmgVd94LeuPbVadnS/ZujxVUPstg9Jn7MCZjXgM0f0tWDI\n"
    "-----END PRIVATE KEY-----\n";

/* The fuzz target's verifier: fixed issuer, audience, clock, binding. */
#define TOKEN_FUZZ_KID "fuzz-key-1"
#define TOKEN_FUZZ_ISS "https://keyward.test"
#define TOKEN_FUZZ_AUD "api.keyward.test"
#define TOKEN_FUZZ_NOW 1700000100
#define TOKEN_FUZZ_IAT 1700000000
/* x5t#S256 of the bytes "fuzz client certificate". */
#define TOKEN_FUZZ_CERT "fuzz client certificate"

#endif /* KW_TEST_TOKEN_KEY_H */
