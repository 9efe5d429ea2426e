/* lcrypto.c: quan.crypto, the cryptography WeChat Pay APIv3 needs, on
 * OpenSSL 3 EVP: RSA keys and X.509 certificates as userdata, RSA-SHA256
 * signatures, RSA-OAEP, AES-GCM, SHA-256 and SHA-1 (one call, or incremental
 * through a digest object), HMAC-SHA256, strict base64, nonces.
 *
 * Error policy: bad arguments raise; what the world causes (bad PEM, failed
 * verify, wrong tag, bad base64, unreadable file) returns
 * nil (or false), message, code.  Codes: "io", "pem", "type", "base64",
 * "length", "mismatch", "too_long", "decrypt", "tag", "openssl".
 *
 * Memory discipline: every OpenSSL object that must outlive a Lua API call is
 * boxed in a userdata (key, cert or scratch) before it is acquired, so a raise
 * never leaks; transient objects live only between Lua calls.  Buffers that
 * held key material are wiped with OPENSSL_cleanse. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "quan.h"

#define KEY_MT "quan.crypto.key"
#define CERT_MT "quan.crypto.cert"
#define DIGEST_MT "quan.crypto.digest"
#define SCRATCH_MT "quan.crypto.scratch"
#define STATE_MT "quan.crypto.state"

#define MAX_RSA_BYTES 2048               /* 16384-bit modulus, OpenSSL's limit */
#define B64LEN(n) (4 * (((n) + 2) / 3))  /* encoded length of n bytes */
#define MAX_SOURCE (1 << 20)             /* largest PEM file read */
#define MAX_DATA ((size_t)INT_MAX / 2)   /* largest buffer handed to EVP */

/* ---------------------------------------------------------------- state */

#define POOL_BYTES 1024 /* CSPRNG output drawn at once for nonces */

/* Per-Lua-state algorithms, fetched once, and the nonce pool; the first
 * upvalue of every function of the module. A Lua state runs in one thread
 * at a time, so the pool needs no lock. */
typedef struct state {
  EVP_MD *sha256, *sha1;
  EVP_CIPHER *gcm128, *gcm256;
  unsigned char pool[POOL_BYTES]; /* RAND_bytes output not handed out yet */
  size_t pool_left;               /* its last pool_left bytes */
  unsigned long pool_gen;         /* fork generation it was drawn in */
} state;

typedef struct qkey {
  EVP_PKEY *pkey;
  EVP_PKEY_CTX *sign;   /* sign-initialised, PKCS#1 v1.5 + SHA-256; lazily */
  EVP_PKEY_CTX *verify; /* verify-initialised likewise */
  int priv;
} qkey;

typedef struct qcert {
  X509 *x;
} qcert;

/* An incremental digest: ctx is NULL once final or closed. */
typedef struct qdigest {
  EVP_MD_CTX *ctx;
  const char *name; /* "sha1" or "sha256", static */
} qdigest;

/* A box for transient objects that must survive a Lua API call. */
typedef struct scratch {
  int fd;
  BIO *bio;
  EVP_PKEY_CTX *pctx;
  EVP_CIPHER_CTX *cctx;
} scratch;

#define STATE(L) ((state *)lua_touserdata(L, lua_upvalueindex(1)))

static int state_gc(lua_State *L) {
  state *s = luaL_checkudata(L, 1, STATE_MT);
  OPENSSL_cleanse(s->pool, sizeof s->pool);
  s->pool_left = 0;
  EVP_MD_free(s->sha256);
  EVP_MD_free(s->sha1);
  EVP_CIPHER_free(s->gcm128);
  EVP_CIPHER_free(s->gcm256);
  s->sha256 = s->sha1 = NULL;
  s->gcm128 = s->gcm256 = NULL;
  return 0;
}

/* release(scratch): frees what it holds; idempotent */
static void scratch_release(scratch *s) {
  if (s->fd >= 0) close(s->fd);
  BIO_free(s->bio);
  EVP_PKEY_CTX_free(s->pctx);
  EVP_CIPHER_CTX_free(s->cctx);
  s->fd = -1;
  s->bio = NULL;
  s->pctx = NULL;
  s->cctx = NULL;
}

static int scratch_gc(lua_State *L) {
  scratch_release(luaL_checkudata(L, 1, SCRATCH_MT));
  return 0;
}

/* [-0, +1] pushes an empty scratch box */
static scratch *scratch_new(lua_State *L) {
  scratch *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->fd = -1;
  s->bio = NULL;
  s->pctx = NULL;
  s->cctx = NULL;
  luaL_setmetatable(L, SCRATCH_MT);
  return s;
}

/* -------------------------------------------------------------- helpers */

/* cleared(n) -> n, with OpenSSL's error queue emptied (after a message
 * has read its reason) */
static int cleared(int n) {
  ERR_clear_error();
  return n;
}

/* [-0, +3] as_false(L, 3) -> 3: the nil of a failure below it made false */
static int as_false(lua_State *L, int n) {
  lua_pushboolean(L, 0);
  lua_replace(L, -1 - n);
  return n;
}

/* [-0, +3] nil, message, code (quan_fail); fail_false: false, message,
 * code, where the success value is a boolean (verify) */
#define fail(L, code, ...) cleared(quan_fail(L, code, __VA_ARGS__))
#define fail_false(L, code, ...) as_false(L, fail(L, code, __VA_ARGS__))

/* the reason of OpenSSL's last error, or a fallback */
static const char *ossl_reason(const char *fallback) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  return r ? r : fallback;
}

/* checkstr(L, i) -> the string at i; a real string, not a number */
static const char *checkstr(lua_State *L, int i, size_t *n) {
  if (lua_type(L, i) != LUA_TSTRING) luaL_typeerror(L, i, "string");
  return lua_tolstring(L, i, n);
}

static const char *optstr(lua_State *L, int i, size_t *n) {
  if (lua_isnoneornil(L, i)) {
    *n = 0;
    return NULL;
  }
  return checkstr(L, i, n);
}

/* raw-or-hex option at i: 1 when "raw" */
static int checkraw(lua_State *L, int i) {
  static const char *const opts[] = {"hex", "raw", NULL};
  return luaL_checkoption(L, i, "hex", opts) == 1;
}

/* [-0, +1] pushes n bytes as lower-case hex or raw */
static void pushdigest(lua_State *L, const unsigned char *d, size_t n, int raw) {
  static const char hex[] = "0123456789abcdef";
  char out[2 * EVP_MAX_MD_SIZE];
  if (raw) {
    lua_pushlstring(L, (const char *)d, n);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  lua_pushlstring(L, out, 2 * n);
}

/* [-0, +1] pushes base64 of n bytes */
static void pushb64(lua_State *L, const unsigned char *d, size_t n) {
  size_t m = B64LEN(n);
  unsigned char *out = lua_newuserdatauv(L, m + 1, 0);
  EVP_EncodeBlock(out, d, (int)n);
  lua_pushlstring(L, (const char *)out, m);
  lua_remove(L, -2);
}

/* B64DIGIT[c]: 1 + the value of base64 digit c (standard alphabet), 0 for
 * any other byte */
static const unsigned char B64DIGIT[256] = {
  ['A'] = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26,
  ['a'] = 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52,
  ['0'] = 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, ['+'] = 63, ['/'] = 64,
};

/* b64decode(in, n, out, &outn, why) -> NULL or what is wrong with the
 * input (in why, 64 bytes).  Strict: standard alphabet, no whitespace, length
 * a multiple of 4, '=' only as final padding, zero padding bits.  out holds
 * n / 4 * 3 bytes. */
static const char *b64decode(const char *in, size_t n, unsigned char *out, size_t *outn,
                             char why[64]) {
  const unsigned char *s = (const unsigned char *)in;
  size_t o = 0;
  if (n % 4 != 0) return "length is not a multiple of 4";
  for (size_t i = 0; i < n; i += 4) {
    unsigned d0 = B64DIGIT[s[i]], d1 = B64DIGIT[s[i + 1]], d2 = B64DIGIT[s[i + 2]], d3 = B64DIGIT[s[i + 3]];
    int pad = 0;
    if (i + 4 == n && s[i + 3] == '=') { /* the last quad: "xx==" or "xxx=" */
      pad = s[i + 2] == '=' ? 2 : 1;
      d3 = 1;
      if (pad == 2) d2 = 1;
    }
    if (!(d0 && d1 && d2 && d3)) {
      size_t at = i + (d0 ? d1 ? d2 ? 3 : 2 : 1 : 0);
      snprintf(why, 64, "invalid character at offset %zu", at);
      return why;
    }
    unsigned long w = (unsigned long)(d0 - 1) << 18 | (unsigned long)(d1 - 1) << 12 |
                      (unsigned long)(d2 - 1) << 6 | (unsigned long)(d3 - 1);
    out[o] = (unsigned char)(w >> 16);
    out[o + 1] = (unsigned char)(w >> 8);
    out[o + 2] = (unsigned char)w;
    o += 3;
    if (pad) { /* the padding bits must be zero, and the padded bytes are not data */
      if ((pad == 1 && (w & 0xff)) || (pad == 2 && (w & 0xffff))) return "non-zero padding bits";
      o -= (size_t)pad;
    }
  }
  *outn = o;
  return NULL;
}

/* Where PEM text comes from: the argument itself or, for "file://path", the
 * file's bytes in a Lua userdata that the caller wipes after parsing. */
typedef struct source {
  const char *p;
  size_t n;
  unsigned char *owned; /* non-NULL: file contents, wipe with OPENSSL_cleanse */
} source;

/* [-0, +2] loadsource(L, i, &src, err, errsz) -> 1, or 0 with err filled.
 * Pushes a scratch box and (for files) the buffer; the caller pops both. */
static int loadsource(lua_State *L, int i, source *src, char *err, size_t errsz) {
  size_t n;
  const char *s = lua_tolstring(L, i, &n);
  scratch *box = scratch_new(L);
  src->owned = NULL;
  if (n < 7 || memcmp(s, "file://", 7) != 0) {
    if (n > MAX_SOURCE) {
      snprintf(err, errsz, "PEM text too large");
      lua_pushnil(L);
      return 0;
    }
    src->p = s;
    src->n = n;
    lua_pushnil(L);
    return 1;
  }
  const char *path = s + 7;
  struct stat st;
  box->fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block */
  if (box->fd < 0 || fstat(box->fd, &st) != 0) {
    snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
    lua_pushnil(L);
    return 0;
  }
  if (!S_ISREG(st.st_mode) || st.st_size > MAX_SOURCE) {
    snprintf(err, errsz, "cannot read %s: %s", path,
             S_ISREG(st.st_mode) ? "file too large" : "not a regular file");
    lua_pushnil(L);
    return 0;
  }
  size_t want = (size_t)st.st_size, got = 0;
  unsigned char *buf = lua_newuserdatauv(L, want + 1, 0);
  while (got < want) {
    ssize_t r = read(box->fd, buf + got, want - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, errsz, "cannot read %s: %s", path, strerror(errno));
      OPENSSL_cleanse(buf, got);
      scratch_release(box);
      return 0;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  scratch_release(box);
  src->p = (const char *)buf;
  src->n = got;
  src->owned = buf;
  return 1;
}

/* the label of the first PEM block ("PRIVATE KEY"), copied into out */
static int pemlabel(const char *p, size_t n, char *out, size_t outsz) {
  static const char begin[] = "-----BEGIN ";
  const char *end = p + n;
  for (const char *q = p; q + sizeof begin - 1 <= end; q++) {
    if (memcmp(q, begin, sizeof begin - 1) != 0) continue;
    q += sizeof begin - 1;
    size_t k = 0;
    while (q + k + 5 <= end && memcmp(q + k, "-----", 5) != 0) {
      if (q[k] == '\n' || k + 1 >= outsz) return 0;
      k++;
    }
    if (q + k + 5 > end) return 0;
    memcpy(out, q, k);
    out[k] = '\0';
    return 1;
  }
  return 0;
}

/* PEM passphrase callback: the passphrase given, or a refusal (never a
 * prompt on the terminal) */
typedef struct pass {
  const char *p;
  size_t n;
  int asked;
} pass;

static int pass_cb(char *buf, int size, int rwflag, void *u) {
  pass *pw = u;
  (void)rwflag;
  if (pw == NULL) return -1;
  pw->asked = 1;
  if (pw->p == NULL || pw->n > (size_t)size) return -1;
  memcpy(buf, pw->p, pw->n);
  return (int)pw->n;
}

static int nopass_cb(char *buf, int size, int rwflag, void *u) {
  (void)buf, (void)size, (void)rwflag, (void)u;
  return -1;
}

/* ------------------------------------------------------------------ keys */

/* Keeps secrets out of core dumps: called before a private key or an
 * AES-GCM key (the APIv3 key) enters this process. The process becomes
 * non-dumpable (prctl PR_SET_DUMPABLE 0: no core file, and no ptrace or
 * /proc/PID/mem reading by other processes of the same user) and its soft
 * core size limit 0. QUAN_ALLOW_CORE_DUMPS=1 in the environment leaves both
 * as they are, for debugging. Idempotent; each call costs two syscalls. */
static void keep_out_of_core_dumps(void) {
  const char *allow = getenv("QUAN_ALLOW_CORE_DUMPS");
  if (allow != NULL && strcmp(allow, "1") == 0) return;
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  struct rlimit rl;
  if (getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur != 0) {
    rl.rlim_cur = 0;
    setrlimit(RLIMIT_CORE, &rl);
  }
}

static void key_release(qkey *k) {
  EVP_PKEY_CTX_free(k->sign);
  EVP_PKEY_CTX_free(k->verify);
  EVP_PKEY_free(k->pkey);
  k->sign = k->verify = NULL;
  k->pkey = NULL;
}

/* __gc, __close and close(): idempotent */
static int key_close(lua_State *L) {
  key_release(luaL_checkudata(L, 1, KEY_MT));
  return 0;
}

/* [-0, +1] pushes an empty key box */
static qkey *key_new(lua_State *L) {
  qkey *k = lua_newuserdatauv(L, sizeof *k, 0);
  memset(k, 0, sizeof *k);
  luaL_setmetatable(L, KEY_MT);
  return k;
}

static qkey *checkkey(lua_State *L, int i) {
  qkey *k = luaL_checkudata(L, i, KEY_MT);
  luaL_argcheck(L, k->pkey != NULL, i, "key is closed");
  return k;
}

static qkey *checkprivate(lua_State *L, int i) {
  qkey *k = checkkey(L, i);
  luaL_argcheck(L, k->priv, i, "private key expected, got a public key");
  return k;
}

static int key_tostring(lua_State *L) {
  qkey *k = luaL_checkudata(L, 1, KEY_MT);
  if (k->pkey == NULL) lua_pushliteral(L, KEY_MT " (closed)");
  else
    lua_pushfstring(L, KEY_MT " (%s %d, %s)", EVP_PKEY_get0_type_name(k->pkey),
                    EVP_PKEY_get_bits(k->pkey), k->priv ? "private" : "public");
  return 1;
}

/* Accepts the key just parsed into k->pkey: RSA only. [-0,+0] on success;
 * on failure frees it and returns a message. */
static const char *key_accept(qkey *k) {
  if (k->pkey == NULL) return NULL;
  if (!EVP_PKEY_is_a(k->pkey, "RSA") || EVP_PKEY_get_size(k->pkey) > MAX_RSA_BYTES) {
    key_release(k);
    return "not an RSA key";
  }
  return NULL;
}

/* private_key(src [, passphrase]) -> key | nil, message, code */
static int c_private_key(lua_State *L) {
  size_t n;
  checkstr(L, 1, &n);
  pass pw = {NULL, 0, 0};
  pw.p = optstr(L, 2, &pw.n);
  lua_settop(L, 2);
  keep_out_of_core_dumps();
  qkey *k = key_new(L); /* 3 */
  source src;
  char err[PATH_MAX + 64], label[64];
  if (!loadsource(L, 1, &src, err, sizeof err)) return fail(L, "io", "private key: %s", err);
  int ok = pemlabel(src.p, src.n, label, sizeof label);
  if (ok && (strcmp(label, "PRIVATE KEY") == 0 || strcmp(label, "RSA PRIVATE KEY") == 0 ||
             strcmp(label, "ENCRYPTED PRIVATE KEY") == 0)) {
    BIO *bio = BIO_new_mem_buf(src.p, (int)src.n);
    if (bio) k->pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, pass_cb, &pw, NULL, NULL);
    BIO_free(bio);
  }
  if (src.owned) OPENSSL_cleanse(src.owned, src.n);
  if (!ok) return fail(L, "pem", "private key: no PEM block found");
  if (k->pkey == NULL) {
    if (strcmp(label, "PRIVATE KEY") && strcmp(label, "RSA PRIVATE KEY") &&
        strcmp(label, "ENCRYPTED PRIVATE KEY"))
      return fail(L, "pem", "private key: expected a private key PEM, got %s", label);
    if (pw.asked && pw.p == NULL)
      return fail(L, "pem", "private key: encrypted, a passphrase is needed");
    return fail(L, "pem", "private key: %s (%s)", pw.asked ? "wrong passphrase or bad PEM" : "bad PEM",
                ossl_reason("unreadable"));
  }
  const char *why = key_accept(k);
  if (why) return fail(L, "type", "private key: %s", why);
  ERR_clear_error();
  k->priv = 1;
  lua_settop(L, 3);
  return 1;
}

/* the public key of certificate PEM text, or NULL */
static EVP_PKEY *pubkey_of_cert(const char *p, size_t n) {
  BIO *bio = BIO_new_mem_buf(p, (int)n);
  X509 *x = bio ? PEM_read_bio_X509(bio, NULL, nopass_cb, NULL) : NULL;
  EVP_PKEY *pk = x ? X509_get_pubkey(x) : NULL;
  X509_free(x);
  BIO_free(bio);
  return pk;
}

/* public key PEM text ("PUBLIC KEY" or "RSA PUBLIC KEY") -> key, or NULL */
static EVP_PKEY *pubkey_of_pem(const char *p, size_t n, const char *structure) {
  EVP_PKEY *pk = NULL;
  BIO *bio = BIO_new_mem_buf(p, (int)n);
  OSSL_DECODER_CTX *d = OSSL_DECODER_CTX_new_for_pkey(&pk, "PEM", structure, "RSA",
                                                      EVP_PKEY_PUBLIC_KEY, NULL, NULL);
  if (bio && d && !OSSL_DECODER_from_bio(d, bio)) pk = NULL;
  OSSL_DECODER_CTX_free(d);
  BIO_free(bio);
  return pk;
}

/* public_key(src) -> key | nil, message, code */
static int c_public_key(lua_State *L) {
  size_t n;
  checkstr(L, 1, &n);
  lua_settop(L, 1);
  qkey *k = key_new(L); /* 2 */
  source src;
  char err[PATH_MAX + 64], label[64];
  if (!loadsource(L, 1, &src, err, sizeof err)) return fail(L, "io", "public key: %s", err);
  if (!pemlabel(src.p, src.n, label, sizeof label))
    return fail(L, "pem", "public key: no PEM block found");
  if (strcmp(label, "CERTIFICATE") == 0) k->pkey = pubkey_of_cert(src.p, src.n);
  else if (strcmp(label, "PUBLIC KEY") == 0)
    k->pkey = pubkey_of_pem(src.p, src.n, "SubjectPublicKeyInfo");
  else if (strcmp(label, "RSA PUBLIC KEY") == 0)
    k->pkey = pubkey_of_pem(src.p, src.n, "type-specific");
  else
    return fail(L, "pem", "public key: expected a public key or certificate PEM, got %s", label);
  if (k->pkey == NULL) return fail(L, "pem", "public key: bad PEM (%s)", ossl_reason("unreadable"));
  const char *why = key_accept(k);
  if (why) return fail(L, "type", "public key: %s", why);
  ERR_clear_error();
  lua_settop(L, 2);
  return 1;
}

/* the lazily made sign (or verify) context of k, or NULL */
static EVP_PKEY_CTX *key_ctx(qkey *k, state *st, int sign) {
  EVP_PKEY_CTX **slot = sign ? &k->sign : &k->verify;
  if (*slot) return *slot;
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
  if (c == NULL || (sign ? EVP_PKEY_sign_init(c) : EVP_PKEY_verify_init(c)) <= 0 ||
      EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) <= 0 ||
      EVP_PKEY_CTX_set_signature_md(c, st->sha256) <= 0) {
    EVP_PKEY_CTX_free(c);
    return NULL;
  }
  return *slot = c;
}

/* key:sign(msg) -> base64 signature | nil, message, code
 * The hot path: a cached context, one digest, one private-key operation. */
static int key_sign(lua_State *L) {
  qkey *k = checkprivate(L, 1);
  size_t n;
  const char *msg = checkstr(L, 2, &n);
  state *st = STATE(L);
  unsigned char md[32], sig[MAX_RSA_BYTES];
  unsigned char out[B64LEN(MAX_RSA_BYTES) + 1];
  size_t siglen = sizeof sig;
  EVP_PKEY_CTX *c = key_ctx(k, st, 1);
  if (c == NULL || !EVP_Digest(msg, n, md, NULL, st->sha256, NULL) ||
      EVP_PKEY_sign(c, sig, &siglen, md, sizeof md) <= 0)
    return fail(L, "openssl", "sign: %s", ossl_reason("failed"));
  int m = EVP_EncodeBlock(out, sig, (int)siglen);
  lua_pushlstring(L, (const char *)out, (size_t)m);
  return 1;
}

/* key:verify(msg, sig_b64) -> true | false, reason, code */
static int key_verify(lua_State *L) {
  qkey *k = checkkey(L, 1);
  size_t n, sn, got;
  const char *msg = checkstr(L, 2, &n);
  const char *s = checkstr(L, 3, &sn);
  state *st = STATE(L);
  size_t want = (size_t)EVP_PKEY_get_size(k->pkey);
  unsigned char md[32], sig[MAX_RSA_BYTES + 3];
  if (sn > B64LEN(MAX_RSA_BYTES)) return fail_false(L, "length", "verify: signature too long");
  char whybuf[64];
  const char *why = b64decode(s, sn, sig, &got, whybuf);
  if (why) return fail_false(L, "base64", "verify: signature is not base64 (%s)", why);
  if (got != want)
    return fail_false(L, "length", "verify: signature is %d bytes, expected %d", (int)got, (int)want);
  EVP_PKEY_CTX *c = key_ctx(k, st, 0);
  if (c == NULL || !EVP_Digest(msg, n, md, NULL, st->sha256, NULL))
    return fail_false(L, "openssl", "verify: %s", ossl_reason("failed"));
  if (EVP_PKEY_verify(c, sig, got, md, sizeof md) != 1)
    return fail_false(L, "mismatch", "verify: signature mismatch");
  lua_pushboolean(L, 1);
  return 1;
}

/* key:encrypt(plaintext) -> base64 RSA-OAEP(SHA-1, MGF1-SHA-1) | nil, message, code */
static int key_encrypt(lua_State *L) {
  qkey *k = checkkey(L, 1);
  size_t n;
  const char *pt = checkstr(L, 2, &n);
  size_t size = (size_t)EVP_PKEY_get_size(k->pkey), max = size > 42 ? size - 2 * 20 - 2 : 0;
  if (n > max)
    return fail(L, "too_long", "encrypt: plaintext is %d bytes, at most %d fit", (int)n, (int)max);
  scratch *box = scratch_new(L);
  unsigned char out[MAX_RSA_BYTES];
  size_t outlen = sizeof out;
  box->pctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
  if (box->pctx == NULL || EVP_PKEY_encrypt_init(box->pctx) <= 0 ||
      EVP_PKEY_CTX_set_rsa_padding(box->pctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
      EVP_PKEY_CTX_set_rsa_oaep_md_name(box->pctx, "SHA1", NULL) <= 0 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md_name(box->pctx, "SHA1", NULL) <= 0 ||
      EVP_PKEY_encrypt(box->pctx, out, &outlen, (const unsigned char *)pt, n) <= 0) {
    scratch_release(box);
    return fail(L, "openssl", "encrypt: %s", ossl_reason("failed"));
  }
  scratch_release(box);
  pushb64(L, out, outlen);
  return 1;
}

/* key:decrypt(b64) -> plaintext | nil, message, code */
static int key_decrypt(lua_State *L) {
  qkey *k = checkprivate(L, 1);
  size_t n, got;
  const char *s = checkstr(L, 2, &n);
  size_t size = (size_t)EVP_PKEY_get_size(k->pkey);
  unsigned char ct[MAX_RSA_BYTES + 3], out[MAX_RSA_BYTES];
  size_t outlen = sizeof out;
  if (n > B64LEN(MAX_RSA_BYTES)) return fail(L, "length", "decrypt: ciphertext too long");
  char whybuf[64];
  const char *why = b64decode(s, n, ct, &got, whybuf);
  if (why) return fail(L, "base64", "decrypt: ciphertext is not base64 (%s)", why);
  if (got != size)
    return fail(L, "length", "decrypt: ciphertext is %d bytes, expected %d", (int)got, (int)size);
  scratch *box = scratch_new(L);
  box->pctx = EVP_PKEY_CTX_new_from_pkey(NULL, k->pkey, NULL);
  int ok = box->pctx && EVP_PKEY_decrypt_init(box->pctx) > 0 &&
           EVP_PKEY_CTX_set_rsa_padding(box->pctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
           EVP_PKEY_CTX_set_rsa_oaep_md_name(box->pctx, "SHA1", NULL) > 0 &&
           EVP_PKEY_CTX_set_rsa_mgf1_md_name(box->pctx, "SHA1", NULL) > 0 &&
           EVP_PKEY_decrypt(box->pctx, out, &outlen, ct, got) > 0;
  scratch_release(box);
  if (!ok) {
    OPENSSL_cleanse(out, sizeof out);
    return fail(L, "decrypt", "decrypt: failed (wrong key or corrupt ciphertext)");
  }
  lua_pushlstring(L, (const char *)out, outlen);
  OPENSSL_cleanse(out, outlen);
  return 1;
}

/* key:public() -> a key holding only the public half */
static int key_public(lua_State *L) {
  qkey *k = checkkey(L, 1);
  if (!k->priv) {
    lua_settop(L, 1);
    return 1;
  }
  qkey *p = key_new(L);
  unsigned char *der = NULL;
  int len = i2d_PUBKEY(k->pkey, &der);
  if (len > 0) {
    const unsigned char *q = der;
    p->pkey = d2i_PUBKEY(NULL, &q, len);
  }
  OPENSSL_free(der);
  if (p->pkey == NULL) return fail(L, "openssl", "public: %s", ossl_reason("failed"));
  return 1;
}

static int key_bits(lua_State *L) {
  lua_pushinteger(L, EVP_PKEY_get_bits(checkkey(L, 1)->pkey));
  return 1;
}

static int key_is_private(lua_State *L) {
  lua_pushboolean(L, checkkey(L, 1)->priv);
  return 1;
}

/* key:pem_public() -> SPKI PEM text */
static int key_pem_public(lua_State *L) {
  qkey *k = checkkey(L, 1);
  scratch *box = scratch_new(L);
  char *p;
  long n;
  box->bio = BIO_new(BIO_s_mem());
  if (box->bio == NULL || !PEM_write_bio_PUBKEY(box->bio, k->pkey) ||
      (n = BIO_get_mem_data(box->bio, &p)) <= 0) {
    scratch_release(box);
    return fail(L, "openssl", "pem_public: %s", ossl_reason("failed"));
  }
  lua_pushlstring(L, p, (size_t)n);
  scratch_release(box);
  return 1;
}

/* key:write_pem(path) -> true | nil, message, code
 * The private key as PKCS#8 PEM, written straight from OpenSSL to a fresh
 * 0600 file beside path (mkstemp), synced, then renamed over path: the key
 * never passes through Lua and no reader sees a partial or wider file. */
static int key_write_pem(lua_State *L) {
  qkey *k = checkprivate(L, 1);
  size_t n;
  const char *path = checkstr(L, 2, &n);
  char tmp[PATH_MAX];
  if (n + sizeof ".XXXXXX" > sizeof tmp)
    return fail(L, "io", "write_pem: cannot write %s: %s", path, strerror(ENAMETOOLONG));
  memcpy(tmp, path, n);
  memcpy(tmp + n, ".XXXXXX", sizeof ".XXXXXX");
  scratch *box = scratch_new(L);
  box->fd = mkostemp(tmp, O_CLOEXEC);
  if (box->fd < 0) {
    int e = errno;
    scratch_release(box);
    return fail(L, "io", "write_pem: cannot write %s: %s", path, strerror(e));
  }
  box->bio = BIO_new_fd(box->fd, BIO_NOCLOSE);
  errno = 0;
  int ok = fchmod(box->fd, 0600) == 0 && box->bio &&
           PEM_write_bio_PrivateKey(box->bio, k->pkey, NULL, NULL, 0, NULL, NULL) &&
           BIO_flush(box->bio) == 1 && fsync(box->fd) == 0;
  int e = errno;
  if (close(box->fd) != 0 && ok) ok = 0, e = errno;
  box->fd = -1;
  scratch_release(box);
  if (ok && rename(tmp, path) != 0) ok = 0, e = errno;
  if (!ok) {
    unlink(tmp);
    return fail(L, "io", "write_pem: cannot write %s: %s", path,
                e ? strerror(e) : ossl_reason("encoding failed"));
  }
  ERR_clear_error();
  lua_pushboolean(L, 1);
  return 1;
}

/* generate_rsa([bits=2048]) -> private key */
static int c_generate_rsa(lua_State *L) {
  lua_Integer bits = luaL_optinteger(L, 1, 2048);
  luaL_argcheck(L, bits >= 1024 && bits <= 16384, 1, "bits must be between 1024 and 16384");
  keep_out_of_core_dumps();
  qkey *k = key_new(L);
  k->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
  if (k->pkey == NULL) return fail(L, "openssl", "generate_rsa: %s", ossl_reason("failed"));
  k->priv = 1;
  return 1;
}

/* ---------------------------------------------------------- certificates */

static void cert_release(qcert *c) {
  X509_free(c->x);
  c->x = NULL;
}

static int cert_close(lua_State *L) {
  cert_release(luaL_checkudata(L, 1, CERT_MT));
  return 0;
}

static qcert *cert_new(lua_State *L) {
  qcert *c = lua_newuserdatauv(L, sizeof *c, 0);
  c->x = NULL;
  luaL_setmetatable(L, CERT_MT);
  return c;
}

static qcert *checkcert(lua_State *L, int i) {
  qcert *c = luaL_checkudata(L, i, CERT_MT);
  luaL_argcheck(L, c->x != NULL, i, "certificate is closed");
  return c;
}

/* serial as `openssl x509 -serial` prints it: upper-case hex, whole bytes */
static void pushserial(lua_State *L, X509 *x) {
  static const char hex[] = "0123456789ABCDEF";
  const ASN1_INTEGER *s = X509_get0_serialNumber(x);
  const unsigned char *d = ASN1_STRING_get0_data(s);
  int n = ASN1_STRING_length(s);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (ASN1_STRING_type(s) == V_ASN1_NEG_INTEGER) luaL_addchar(&b, '-');
  if (n == 0) luaL_addstring(&b, "00");
  for (int i = 0; i < n; i++) {
    luaL_addchar(&b, hex[d[i] >> 4]);
    luaL_addchar(&b, hex[d[i] & 15]);
  }
  luaL_pushresult(&b);
}

static int cert_tostring(lua_State *L) {
  qcert *c = luaL_checkudata(L, 1, CERT_MT);
  if (c->x == NULL) {
    lua_pushliteral(L, CERT_MT " (closed)");
    return 1;
  }
  lua_pushliteral(L, CERT_MT " (serial ");
  pushserial(L, c->x);
  lua_pushliteral(L, ")");
  lua_concat(L, 3);
  return 1;
}

/* certificate(src) -> cert | nil, message, code */
static int c_certificate(lua_State *L) {
  checkstr(L, 1, NULL);
  lua_settop(L, 1);
  qcert *c = cert_new(L); /* 2 */
  source src;
  char err[PATH_MAX + 64], label[64];
  if (!loadsource(L, 1, &src, err, sizeof err)) return fail(L, "io", "certificate: %s", err);
  if (!pemlabel(src.p, src.n, label, sizeof label))
    return fail(L, "pem", "certificate: no PEM block found");
  if (strcmp(label, "CERTIFICATE") != 0)
    return fail(L, "pem", "certificate: expected a certificate PEM, got %s", label);
  BIO *bio = BIO_new_mem_buf(src.p, (int)src.n);
  if (bio) c->x = PEM_read_bio_X509(bio, NULL, nopass_cb, NULL);
  BIO_free(bio);
  if (c->x == NULL) return fail(L, "pem", "certificate: bad PEM (%s)", ossl_reason("unreadable"));
  ERR_clear_error();
  lua_settop(L, 2);
  return 1;
}

static int cert_serial(lua_State *L) {
  pushserial(L, checkcert(L, 1)->x);
  return 1;
}

/* cert:public_key() -> key */
static int cert_public_key(lua_State *L) {
  qcert *c = checkcert(L, 1);
  qkey *k = key_new(L);
  k->pkey = X509_get_pubkey(c->x);
  if (k->pkey == NULL) return fail(L, "pem", "public_key: %s", ossl_reason("unreadable key"));
  const char *why = key_accept(k);
  if (why) return fail(L, "type", "public_key: %s", why);
  return 1;
}

static int cert_pem(lua_State *L) {
  qcert *c = checkcert(L, 1);
  scratch *box = scratch_new(L);
  char *p;
  long n;
  box->bio = BIO_new(BIO_s_mem());
  if (box->bio == NULL || !PEM_write_bio_X509(box->bio, c->x) ||
      (n = BIO_get_mem_data(box->bio, &p)) <= 0) {
    scratch_release(box);
    return fail(L, "openssl", "pem: %s", ossl_reason("failed"));
  }
  lua_pushlstring(L, p, (size_t)n);
  scratch_release(box);
  return 1;
}

/* [-0, +1] an ASN1_TIME as epoch seconds */
static int pushtime(lua_State *L, const ASN1_TIME *t) {
  struct tm tm;
  if (t == NULL || !ASN1_TIME_to_tm(t, &tm)) return fail(L, "openssl", "certificate: bad time");
  lua_pushinteger(L, (lua_Integer)timegm(&tm));
  return 1;
}

static int cert_not_before(lua_State *L) {
  return pushtime(L, X509_get0_notBefore(checkcert(L, 1)->x));
}

static int cert_not_after(lua_State *L) {
  return pushtime(L, X509_get0_notAfter(checkcert(L, 1)->x));
}

/* cert:subject() -> "/CN=.../O=..." (values UTF-8) */
static int cert_subject(lua_State *L) {
  X509_NAME *name = X509_get_subject_name(checkcert(L, 1)->x);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (int i = 0; i < X509_NAME_entry_count(name); i++) {
    X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
    const ASN1_STRING *v = X509_NAME_ENTRY_get_data(e);
    int nid = OBJ_obj2nid(X509_NAME_ENTRY_get_object(e));
    const char *sn = nid == NID_undef ? "?" : OBJ_nid2sn(nid);
    luaL_addchar(&b, '/');
    luaL_addstring(&b, sn);
    luaL_addchar(&b, '=');
    int t = ASN1_STRING_type(v);
    if (t == V_ASN1_UTF8STRING || t == V_ASN1_PRINTABLESTRING || t == V_ASN1_IA5STRING ||
        t == V_ASN1_T61STRING || t == V_ASN1_VISIBLESTRING) {
      luaL_addlstring(&b, (const char *)ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v));
    } else { /* BMPString, UniversalString: convert in a Lua-owned buffer */
      unsigned char *u = NULL;
      int n = ASN1_STRING_to_UTF8(&u, v);
      if (n > 0 && n < 4096) {
        char tmp[4096];
        memcpy(tmp, u, (size_t)n);
        OPENSSL_free(u);
        luaL_addlstring(&b, tmp, (size_t)n);
      } else {
        OPENSSL_free(u);
        luaL_addstring(&b, "?");
      }
    }
  }
  luaL_pushresult(&b);
  return 1;
}

/* make_certificate{key=, issuer_key=, issuer_cert=, subject=, serial=,
 * days=, ca=, san=} -> cert | nil, message, code */
typedef struct certopts {
  qkey *key, *issuer_key;
  qcert *issuer_cert;
  const char *subject, *serial;
  lua_Integer days;
  int ca;
  char san[4096];
} certopts;

static void *optud(lua_State *L, int t, const char *field, const char *mt, const char *what) {
  void *p = NULL;
  if (lua_getfield(L, t, field) != LUA_TNIL) {
    p = luaL_testudata(L, -1, mt);
    if (p == NULL) luaL_error(L, "make_certificate: field '%s' must be a %s", field, what);
  }
  lua_pop(L, 1);
  return p;
}

static void certopts_read(lua_State *L, certopts *o) {
  static const char *const known[] = {"key", "issuer_key", "issuer_cert", "subject", "serial",
                                      "days", "ca", "san", NULL};
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    int ok = 0;
    if (lua_type(L, -2) == LUA_TSTRING)
      for (const char *const *k = known; *k; k++) ok |= strcmp(*k, lua_tostring(L, -2)) == 0;
    if (!ok)
      luaL_error(L, "make_certificate: unknown option '%s'", luaL_tolstring(L, -2, NULL));
    lua_pop(L, 1);
  }
  o->key = optud(L, 1, "key", KEY_MT, "quan.crypto.key");
  o->issuer_key = optud(L, 1, "issuer_key", KEY_MT, "quan.crypto.key");
  o->issuer_cert = optud(L, 1, "issuer_cert", CERT_MT, "quan.crypto.cert");
  if (o->key == NULL || o->key->pkey == NULL)
    luaL_error(L, "make_certificate: field 'key' must be an open quan.crypto.key");
  if ((o->issuer_key == NULL) != (o->issuer_cert == NULL))
    luaL_error(L, "make_certificate: give both 'issuer_key' and 'issuer_cert', or neither");
  if (o->issuer_key && (o->issuer_key->pkey == NULL || !o->issuer_key->priv))
    luaL_error(L, "make_certificate: field 'issuer_key' must be an open private key");
  if (o->issuer_cert && o->issuer_cert->x == NULL)
    luaL_error(L, "make_certificate: field 'issuer_cert' is closed");
  if (o->issuer_key == NULL && !o->key->priv)
    luaL_error(L, "make_certificate: a self-signed certificate needs a private 'key'");
  if (o->issuer_key && X509_check_private_key(o->issuer_cert->x, o->issuer_key->pkey) != 1) {
    ERR_clear_error();
    luaL_error(L, "make_certificate: 'issuer_key' does not match 'issuer_cert'");
  }
  lua_getfield(L, 1, "subject");
  o->subject = lua_tostring(L, -1);
  if (lua_type(L, -1) != LUA_TSTRING || o->subject[0] != '/')
    luaL_error(L, "make_certificate: field 'subject' must be a string like \"/CN=name\"");
  lua_getfield(L, 1, "serial");
  o->serial = NULL;
  if (!lua_isnil(L, -1)) {
    size_t n;
    o->serial = lua_tolstring(L, -1, &n);
    int ok = lua_type(L, -1) == LUA_TSTRING && n >= 1 && n <= 40;
    for (size_t i = 0; ok && i < n; i++) ok = strchr("0123456789abcdefABCDEF", o->serial[i]) != NULL;
    if (!ok) luaL_error(L, "make_certificate: field 'serial' must be 1 to 40 hex digits");
  }
  lua_getfield(L, 1, "days");
  o->days = 365;
  if (!lua_isnil(L, -1)) {
    int isnum;
    o->days = lua_tointegerx(L, -1, &isnum);
    if (!isnum || o->days < 1 || o->days > 36500)
      luaL_error(L, "make_certificate: field 'days' must be an integer from 1 to 36500");
  }
  lua_getfield(L, 1, "ca");
  o->ca = lua_toboolean(L, -1);
  lua_getfield(L, 1, "san");
  o->san[0] = '\0';
  if (!lua_isnil(L, -1)) {
    size_t used = 0;
    if (!lua_istable(L, -1)) luaL_error(L, "make_certificate: field 'san' must be an array of names");
    for (lua_Integer i = 1;; i++) {
      if (lua_rawgeti(L, -1, i) == LUA_TNIL) {
        lua_pop(L, 1);
        break;
      }
      size_t n;
      const char *s = lua_tolstring(L, -1, &n);
      int ok = lua_type(L, -1) == LUA_TSTRING && n >= 1 && n < 256;
      for (size_t j = 0; ok && j < n; j++)
        ok = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*:", s[j]) &&
             s[j] != '\0';
      if (!ok) luaL_error(L, "make_certificate: san[%d] must be a host name or IP address", (int)i);
      unsigned char a[16];
      int ip = inet_pton(AF_INET, s, a) == 1 || inet_pton(AF_INET6, s, a) == 1;
      int w = snprintf(o->san + used, sizeof o->san - used, "%s%s:%s", used ? "," : "",
                       ip ? "IP" : "DNS", s);
      if (w < 0 || (size_t)w >= sizeof o->san - used) luaL_error(L, "make_certificate: san too long");
      used += (size_t)w;
      lua_pop(L, 1);
    }
  }
  /* the five values stay on the stack: o->subject and o->serial point into them */
}

/* adds /K=V/K=V to name; 0 when malformed */
static int add_subject(X509_NAME *name, const char *s) {
  char field[64], value[256];
  while (*s == '/') {
    const char *eq = strchr(s + 1, '=');
    if (eq == NULL || eq == s + 1 || (size_t)(eq - s - 1) >= sizeof field) return 0;
    const char *end = strchr(eq + 1, '/');
    if (end == NULL) end = eq + strlen(eq);
    if ((size_t)(end - eq - 1) >= sizeof value || end == eq + 1) return 0;
    memcpy(field, s + 1, (size_t)(eq - s - 1));
    field[eq - s - 1] = '\0';
    memcpy(value, eq + 1, (size_t)(end - eq - 1));
    value[end - eq - 1] = '\0';
    if (!X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8, (unsigned char *)value, -1, -1, 0))
      return 0;
    s = end;
  }
  return *s == '\0';
}

static int add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value) {
  X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
  int ok = e && X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  return ok;
}

static int c_make_certificate(lua_State *L) {
  certopts o;
  certopts_read(L, &o);
  state *st = STATE(L);
  qcert *c = cert_new(L);
  X509 *x = c->x = X509_new();
  if (x == NULL) return fail(L, "openssl", "make_certificate: out of memory");
  if (!add_subject(X509_get_subject_name(x), o.subject)) {
    ERR_clear_error();
    return luaL_error(L, "make_certificate: bad subject \"%s\"", o.subject);
  }
  X509 *issuer = o.issuer_cert ? o.issuer_cert->x : x;
  EVP_PKEY *signer = o.issuer_key ? o.issuer_key->pkey : o.key->pkey;
  BIGNUM *bn = BN_new();
  int ok = bn && (o.serial ? BN_hex2bn(&bn, o.serial) > 0
                           : BN_rand(bn, 159, BN_RAND_TOP_ONE, BN_RAND_BOTTOM_ANY)) &&
           BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
  BN_free(bn);
  X509V3_CTX v3;
  ok = ok && X509_set_version(x, X509_VERSION_3) &&
       X509_set_issuer_name(x, X509_get_subject_name(issuer)) &&
       X509_gmtime_adj(X509_getm_notBefore(x), -300) &&
       X509_time_adj_ex(X509_getm_notAfter(x), (int)o.days, 0, NULL) &&
       X509_set_pubkey(x, o.key->pkey);
  if (ok) {
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    ok = add_ext(x, &v3, NID_basic_constraints, o.ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
         add_ext(x, &v3, NID_key_usage,
                 o.ca ? "critical,keyCertSign,cRLSign,digitalSignature"
                      : "critical,digitalSignature,keyEncipherment") &&
         add_ext(x, &v3, NID_subject_key_identifier, "hash") &&
         add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") &&
         (o.ca || add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth")) &&
         (o.san[0] == '\0' || add_ext(x, &v3, NID_subject_alt_name, o.san)) &&
         X509_sign(x, signer, st->sha256) > 0;
  }
  if (!ok) return fail(L, "openssl", "make_certificate: %s", ossl_reason("failed"));
  ERR_clear_error();
  return 1;
}

/* ------------------------------------------------------ digests and bytes */

/* [-0, +1] one_shot(L, md, size, name): digest of argument 1 by md (size
 * bytes), raw or hex as argument 2 says */
static int one_shot(lua_State *L, const EVP_MD *md, unsigned size, const char *name) {
  size_t n;
  const char *d = checkstr(L, 1, &n);
  int raw = checkraw(L, 2);
  unsigned char out[EVP_MAX_MD_SIZE];
  if (!EVP_Digest(d, n, out, NULL, md, NULL)) return luaL_error(L, "%s: %s", name, ossl_reason("failed"));
  pushdigest(L, out, size, raw);
  return 1;
}

/* sha256(data [, "raw"|"hex"]) -> digest */
static int c_sha256(lua_State *L) { return one_shot(L, STATE(L)->sha256, 32, "sha256"); }

/* sha1(data [, "raw"|"hex"]) -> digest (the hash_value of flow files) */
static int c_sha1(lua_State *L) { return one_shot(L, STATE(L)->sha1, 20, "sha1"); }

/* digest(name) -> an incremental digest of that algorithm ("sha1",
 * "sha256"), for data that comes in pieces (a file read in chunks). The
 * userdata is made before the context, so a raise leaks nothing. */
static int c_digest(lua_State *L) {
  static const char *const names[] = {"sha1", "sha256", NULL};
  int which = luaL_checkoption(L, 1, NULL, names);
  state *st = STATE(L);
  qdigest *d = lua_newuserdatauv(L, sizeof *d, 0);
  d->ctx = NULL;
  d->name = names[which];
  luaL_setmetatable(L, DIGEST_MT);
  d->ctx = EVP_MD_CTX_new();
  if (d->ctx == NULL || !EVP_DigestInit_ex2(d->ctx, which == 0 ? st->sha1 : st->sha256, NULL))
    return luaL_error(L, "digest: %s", ossl_reason("cannot start"));
  return 1;
}

static qdigest *checkdigest(lua_State *L, int i) {
  qdigest *d = luaL_checkudata(L, i, DIGEST_MT);
  luaL_argcheck(L, d->ctx != NULL, i, "digest is finished or closed");
  return d;
}

static void digest_release(qdigest *d) {
  EVP_MD_CTX_free(d->ctx);
  d->ctx = NULL;
}

/* d:update(data) -> d: adds bytes */
static int digest_update(lua_State *L) {
  qdigest *d = checkdigest(L, 1);
  size_t n;
  const char *s = checkstr(L, 2, &n);
  if (!EVP_DigestUpdate(d->ctx, s, n)) return luaL_error(L, "digest update: %s", ossl_reason("failed"));
  lua_settop(L, 1);
  return 1;
}

/* d:final([format]) -> the digest of every byte added; d is finished */
static int digest_final(lua_State *L) {
  qdigest *d = checkdigest(L, 1);
  int raw = checkraw(L, 2);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  int ok = EVP_DigestFinal_ex(d->ctx, md, &n);
  digest_release(d);
  if (!ok) return luaL_error(L, "digest final: %s", ossl_reason("failed"));
  pushdigest(L, md, n, raw);
  return 1;
}

static int digest_close(lua_State *L) {
  digest_release(luaL_checkudata(L, 1, DIGEST_MT));
  return 0;
}

static int digest_tostring(lua_State *L) {
  qdigest *d = luaL_checkudata(L, 1, DIGEST_MT);
  lua_pushfstring(L, DIGEST_MT " (%s%s)", d->name, d->ctx ? "" : ", finished");
  return 1;
}

/* hmac_sha256(key, data [, "raw"|"hex"]) -> mac */
static int c_hmac_sha256(lua_State *L) {
  size_t kn, n, outlen = 0;
  const char *k = checkstr(L, 1, &kn);
  const char *d = checkstr(L, 2, &n);
  int raw = checkraw(L, 3);
  unsigned char md[32];
  if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, k, kn, (const unsigned char *)d, n, md,
                 sizeof md, &outlen))
    return luaL_error(L, "hmac_sha256: %s", ossl_reason("failed"));
  pushdigest(L, md, outlen, raw);
  return 1;
}

static int c_base64_encode(lua_State *L) {
  size_t n;
  const char *s = checkstr(L, 1, &n);
  luaL_argcheck(L, n <= MAX_DATA, 1, "too long");
  pushb64(L, (const unsigned char *)s, n);
  return 1;
}

/* base64_decode(s) -> bytes | nil, message, "base64" */
static int c_base64_decode(lua_State *L) {
  size_t n, got;
  const char *s = checkstr(L, 1, &n);
  unsigned char *out = lua_newuserdatauv(L, n / 4 * 3 + 1, 0);
  char whybuf[64];
  const char *why = b64decode(s, n, out, &got, whybuf);
  if (why) return fail(L, "base64", "base64: %s", why);
  lua_pushlstring(L, (const char *)out, got);
  return 1;
}

/* A forked child holds a copy of its parent's pools: were both to use them,
 * they would send the same nonces. Each fork moves the generation on, and a
 * pool drawn in an older generation is thrown away. Without the fork
 * handler (pthread_atfork failed) no pool is kept at all. */
static atomic_ulong fork_gen = 1;
static atomic_int pool_usable;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void after_fork(void) { atomic_fetch_add(&fork_gen, 1); }
static void watch_forks(void) { atomic_store(&pool_usable, pthread_atfork(NULL, NULL, after_fork) == 0); }

/* nonce([n]) -> n characters of [0-9A-Za-z], uniformly from the CSPRNG.
 * One RAND_bytes call per POOL_BYTES bytes: a nonce per request would
 * otherwise pay the DRBG's per-call cost every time. */
static int c_nonce(lua_State *L) {
  static const char chars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  state *st = STATE(L);
  lua_Integer n = luaL_optinteger(L, 1, 32);
  luaL_argcheck(L, n >= 1 && n <= 1 << 20, 1, "length must be between 1 and 1048576");
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, (size_t)n);
  unsigned long gen = atomic_load(&fork_gen);
  if (st->pool_gen != gen || !atomic_load(&pool_usable)) st->pool_left = 0;
  lua_Integer i = 0;
  while (i < n) {
    if (st->pool_left == 0) {
      if (RAND_bytes(st->pool, sizeof st->pool) != 1) return luaL_error(L, "nonce: %s", ossl_reason("no randomness"));
      st->pool_left = sizeof st->pool;
      st->pool_gen = gen;
    }
    unsigned char *r = st->pool + sizeof st->pool - st->pool_left--;
    if (*r < 248) out[i++] = chars[*r % 62]; /* 248 = 4 * 62: no bias */
    *r = 0; /* a byte is handed out once */
  }
  if (!atomic_load(&pool_usable)) {
    OPENSSL_cleanse(st->pool, sizeof st->pool);
    st->pool_left = 0;
  }
  luaL_pushresultsize(&b, (size_t)n);
  return 1;
}

static int c_random_bytes(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0 && n <= 1 << 24, 1, "length must be between 0 and 16777216");
  unsigned char *out = lua_newuserdatauv(L, (size_t)n + 1, 0);
  if (n > 0 && RAND_bytes(out, (int)n) != 1)
    return luaL_error(L, "random_bytes: %s", ossl_reason("no randomness"));
  lua_pushlstring(L, (const char *)out, (size_t)n);
  return 1;
}

/* equals(a, b) -> boolean; constant time in the contents */
static int c_equals(lua_State *L) {
  size_t an, bn;
  const char *a = checkstr(L, 1, &an);
  const char *b = checkstr(L, 2, &bn);
  lua_pushboolean(L, an == bn && CRYPTO_memcmp(a, b, an) == 0);
  return 1;
}

/* ---------------------------------------------------------------- AES-GCM */

/* checks key (16 or 32 bytes), nonce (1..128 bytes), aad; the cipher */
static EVP_CIPHER *gcm_args(lua_State *L, const char **key, const char **iv, size_t *ivn,
                            const char **aad, size_t *aadn) {
  size_t kn;
  *key = checkstr(L, 1, &kn);
  luaL_argcheck(L, kn == 16 || kn == 32, 1, "key must be 32 bytes (or 16 for AES-128)");
  *iv = checkstr(L, 2, ivn);
  luaL_argcheck(L, *ivn >= 1 && *ivn <= 128, 2, "nonce must be 1 to 128 bytes");
  *aad = optstr(L, 3, aadn);
  luaL_argcheck(L, *aadn <= MAX_DATA, 3, "too long");
  keep_out_of_core_dumps();
  return kn == 32 ? STATE(L)->gcm256 : STATE(L)->gcm128;
}

static int gcm_init(EVP_CIPHER_CTX *c, EVP_CIPHER *cipher, int enc, const char *key,
                    const char *iv, size_t ivn, const char *aad, size_t aadn) {
  int outl;
  return EVP_CipherInit_ex2(c, cipher, NULL, NULL, enc, NULL) &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)ivn, NULL) > 0 &&
         EVP_CipherInit_ex2(c, NULL, (const unsigned char *)key, (const unsigned char *)iv, enc,
                            NULL) &&
         (aadn == 0 || EVP_CipherUpdate(c, NULL, &outl, (const unsigned char *)aad, (int)aadn));
}

/* aes_gcm_encrypt(key, nonce, aad, plaintext) -> base64(ciphertext ‖ tag) */
static int c_aes_gcm_encrypt(lua_State *L) {
  const char *key, *iv, *aad;
  size_t ivn, aadn, n;
  EVP_CIPHER *cipher = gcm_args(L, &key, &iv, &ivn, &aad, &aadn);
  const char *pt = checkstr(L, 4, &n);
  luaL_argcheck(L, n <= MAX_DATA, 4, "too long");
  lua_settop(L, 4);
  scratch *box = scratch_new(L);
  unsigned char *out = lua_newuserdatauv(L, n + 16, 0);
  int l1 = 0, l2 = 0;
  box->cctx = EVP_CIPHER_CTX_new();
  int ok = box->cctx && gcm_init(box->cctx, cipher, 1, key, iv, ivn, aad, aadn) &&
           EVP_EncryptUpdate(box->cctx, out, &l1, (const unsigned char *)pt, (int)n) &&
           EVP_EncryptFinal_ex(box->cctx, out + l1, &l2) &&
           EVP_CIPHER_CTX_ctrl(box->cctx, EVP_CTRL_GCM_GET_TAG, 16, out + n) > 0;
  scratch_release(box);
  if (!ok) return fail(L, "openssl", "aes_gcm_encrypt: %s", ossl_reason("failed"));
  pushb64(L, out, n + 16);
  return 1;
}

/* aes_gcm_decrypt(key, nonce, aad, b64) -> plaintext | nil, message, code */
static int c_aes_gcm_decrypt(lua_State *L) {
  const char *key, *iv, *aad;
  size_t ivn, aadn, n, got;
  EVP_CIPHER *cipher = gcm_args(L, &key, &iv, &ivn, &aad, &aadn);
  const char *s = checkstr(L, 4, &n);
  luaL_argcheck(L, n <= MAX_DATA, 4, "too long");
  lua_settop(L, 4);
  scratch *box = scratch_new(L);
  unsigned char *ct = lua_newuserdatauv(L, n / 4 * 3 + 1, 0);
  char whybuf[64];
  const char *why = b64decode(s, n, ct, &got, whybuf);
  if (why) return fail(L, "base64", "aes_gcm_decrypt: ciphertext is not base64 (%s)", why);
  if (got < 16) return fail(L, "length", "aes_gcm_decrypt: ciphertext shorter than the tag");
  got -= 16;
  unsigned char *out = lua_newuserdatauv(L, got + 1, 0);
  int l1 = 0, l2 = 0;
  box->cctx = EVP_CIPHER_CTX_new();
  int ok = box->cctx && gcm_init(box->cctx, cipher, 0, key, iv, ivn, aad, aadn) &&
           EVP_DecryptUpdate(box->cctx, out, &l1, ct, (int)got) &&
           EVP_CIPHER_CTX_ctrl(box->cctx, EVP_CTRL_GCM_SET_TAG, 16, ct + got) > 0;
  int tag = ok && EVP_DecryptFinal_ex(box->cctx, out + l1, &l2) > 0;
  scratch_release(box);
  if (!tag) {
    OPENSSL_cleanse(out, got);
    if (!ok) return fail(L, "openssl", "aes_gcm_decrypt: %s", ossl_reason("failed"));
    return fail(L, "tag", "aes_gcm_decrypt: authentication failed (wrong key, nonce, "
                          "associated data or tag)");
  }
  lua_pushlstring(L, (const char *)out, got);
  OPENSSL_cleanse(out, got);
  return 1;
}

/* ------------------------------------------------------------------ open */

static const luaL_Reg key_methods[] = {
  {"sign", key_sign},
  {"verify", key_verify},
  {"encrypt", key_encrypt},
  {"decrypt", key_decrypt},
  {"public", key_public},
  {"bits", key_bits},
  {"is_private", key_is_private},
  {"pem_public", key_pem_public},
  {"write_pem", key_write_pem},
  {"close", key_close},
  {NULL, NULL}
};

static const luaL_Reg cert_methods[] = {
  {"serial", cert_serial},
  {"public_key", cert_public_key},
  {"pem", cert_pem},
  {"not_before", cert_not_before},
  {"not_after", cert_not_after},
  {"subject", cert_subject},
  {"close", cert_close},
  {NULL, NULL}
};

static const luaL_Reg digest_methods[] = {
  {"update", digest_update},
  {"final", digest_final},
  {"close", digest_close},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"private_key", c_private_key},
  {"public_key", c_public_key},
  {"certificate", c_certificate},
  {"generate_rsa", c_generate_rsa},
  {"make_certificate", c_make_certificate},
  {"sha256", c_sha256},
  {"sha1", c_sha1},
  {"digest", c_digest},
  {"hmac_sha256", c_hmac_sha256},
  {"base64_encode", c_base64_encode},
  {"base64_decode", c_base64_decode},
  {"nonce", c_nonce},
  {"random_bytes", c_random_bytes},
  {"equals", c_equals},
  {"aes_gcm_encrypt", c_aes_gcm_encrypt},
  {"aes_gcm_decrypt", c_aes_gcm_decrypt},
  {NULL, NULL}
};

/* [-0, +0] metatable name with methods (state upvalue at -1), close, tostring */
static void newclass(lua_State *L, const char *name, const luaL_Reg *methods,
                     lua_CFunction close, lua_CFunction tostring) {
  luaL_newmetatable(L, name);             /* state mt */
  lua_newtable(L);                        /* state mt methods */
  lua_pushvalue(L, -3);
  luaL_setfuncs(L, methods, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pushliteral(L, "locked");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1);
}

int luaopen_quan_crypto(lua_State *L) {
  if (luaL_newmetatable(L, SCRATCH_MT)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  pthread_once(&fork_once, watch_forks);
  state *st = lua_newuserdatauv(L, sizeof *st, 0);
  memset(st, 0, sizeof *st);
  if (luaL_newmetatable(L, STATE_MT)) {
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  st->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  st->sha1 = EVP_MD_fetch(NULL, "SHA1", NULL);
  st->gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
  st->gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
  if (!st->sha256 || !st->sha1 || !st->gcm128 || !st->gcm256)
    return luaL_error(L, "quan.crypto: OpenSSL lacks SHA256, SHA1 or AES-GCM (%s)",
                      ossl_reason("fetch failed"));
  newclass(L, KEY_MT, key_methods, key_close, key_tostring);
  newclass(L, CERT_MT, cert_methods, cert_close, cert_tostring);
  newclass(L, DIGEST_MT, digest_methods, digest_close, digest_tostring);
  luaL_newlibtable(L, funcs);
  lua_pushvalue(L, -2);
  luaL_setfuncs(L, funcs, 1);
  return 1;
}
