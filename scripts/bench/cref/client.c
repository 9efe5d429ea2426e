/* scripts/bench/cref/client.c: the C reference client of `make bench`
 * (issue #18), built into build/cref, never into quan. Measurement only.
 *
 * It does a create-stock request's work as quan's client does it, written by
 * hand in C with libcurl and OpenSSL and no Lua: the same JSON body (keys in
 * sorted order, as wechatpay.json writes them), signed with
 * WECHATPAY2-SHA256-RSA2048 (fresh timestamp and nonce per request), the same
 * headers, the same libcurl settings (TLS verification, HTTP/2 where offered,
 * one multi handle holding the kept-alive connections, shared TLS sessions);
 * each 2xx answer verified as wechatpay.verify does (the four Wechatpay-*
 * headers, a known serial, the timestamp within 300 s, RSA-SHA256 over
 * "timestamp\nnonce\nbody\n") and its body parsed for stock_id. What quan
 * does besides (the request validator, Lua tables, error objects) is what
 * the benchmark weighs.
 *
 * With --send-coupons STOCK_ID --appid APPID it sends coupons instead
 * (POST /v3/marketing/favor/users/{openid}/coupons, openid and
 * out_request_no both PREFIX<i>, each answer verified alike and its
 * coupon_id required): the plain load generator scripts/bench/batch.lua
 * measures the sandbox's capacity with, beside the batch engine.
 *
 * Its twin scripts/bench/cref/client.lua takes the same arguments (but the
 * coupon mode) and prints the same lines, so scripts/bench/cref.lua runs
 * both alike:
 *
 *   cref --base-url URL --mchid ID --serial HEX --private-key PATH
 *        --cert NAME=PATH [--cert NAME=PATH ...] [--ca-file PATH]
 *        --begin RFC3339 --end RFC3339 --prefix OUT_REQUEST_NO_PREFIX
 *        [--user-agent UA] [--warm-up W] [--sequential N] [--parallel N]
 *        [--print-request I] [--send-coupons STOCK_ID --appid APPID]
 *
 * Without --sequential or --parallel it loads the keys, sets up libcurl and
 * exits (the start-up a benchmark times). --warm-up W first sends one
 * request, then W with 16 in flight, then bursts of 16 until 16 connections
 * to the server are open (/proc/self/net/tcp), so that the measured
 * requests pay no TLS handshake: when the client is slow, as under
 * callgrind, requests waiting for a connection take one that fell idle
 * meanwhile, and 16 in flight can run on fewer connections until the
 * measured phase opens the rest (strace showed 1 to 15 open after a burst
 * of 16, 9 after 128). It prints warm_up_requests and warm_up_connections,
 * and final_connections at the end. Each measured phase prints
 * `<phase>_cpu_s`, `<phase>_wall_s`, `<phase>_maxrss_kib` and
 * `<phase>_requests` lines and then calls phase_marker(), where
 * `valgrind --tool=callgrind --dump-before=phase_marker` cuts its profile.
 * --print-request I prints the headers (but Authorization) and the body of
 * request I and exits. Any failure (transport, status,
 * verification, body) ends the process with status 1 and a message naming
 * the request. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#define PARALLEL 16              /* requests in flight in the parallel phase */
#define MAX_SKEW 300             /* seconds an answer's timestamp may be off */
#define MAX_RESPONSE (64L << 20) /* bytes of an answer kept, as quan.http */
#define MAX_KEYS 16
#define MAX_DEPTH 1000           /* JSON nesting accepted */
#define TARGET "/v3/marketing/favor/coupon-stocks"
#define COUPONS_TARGET "/v3/marketing/favor/users/%s%ld/coupons" /* openid: PREFIX<i> */

/* ---- failures ----------------------------------------------------------- */

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("cref: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  exit(1);
}

/* the reason of OpenSSL's last error, or dflt */
static const char *ossl_reason(const char *dflt) {
  unsigned long e = ERR_get_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : dflt;
}

/* ---- measurement -------------------------------------------------------- */

/* user + system CPU seconds of this process, as quan.os.cputime */
static double cputime(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static long maxrss(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static double wallclock(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Called at the end of each phase: callgrind's --dump-before cuts there.
 * It calls getppid() as quan's marker (quan.os.getppid) does, so that an
 * strace of either client shows the phases alike. */
__attribute__((noinline)) void phase_marker(void) {
  (void)getppid();
}

/* ---- configuration ------------------------------------------------------ */

typedef struct Key {
  const char *name;      /* serial or PUB_KEY_ID_... */
  EVP_PKEY *pkey;
  EVP_PKEY_CTX *verify;  /* verify-initialised, PKCS#1 v1.5 + SHA-256 */
  int is_cert;
  time_t not_after;      /* of a certificate */
} Key;

typedef struct Config {
  const char *base_url, *mchid, *serial, *private_key, *ca_file;
  const char *begin, *end, *prefix, *user_agent;
  const char *send_stock, *appid; /* --send-coupons: the stock, the appid */
  long sequential, parallel, print_request, warm_up;
  Key keys[MAX_KEYS];
  int nkeys;
  /* derived */
  char url[1024];        /* origin + prefix + TARGET */
  char target[1024];     /* prefix + TARGET: the signed path */
  char origin[512];      /* https://host[:port] */
  char path_prefix[512]; /* the base URL's path (a gateway's), without a trailing / */
  const char *answer_field; /* "stock_id", or "coupon_id" when sending coupons */
  unsigned port;         /* the server's TCP port */
  const char *accept;    /* the Wechatpay-Serial sent: the key answers are signed with */
  EVP_PKEY_CTX *sign;    /* sign-initialised merchant key */
  EVP_MD *sha256;
} Config;

/* 1 when s is made only of characters JSON and a header carry unescaped */
static int plain_text(const char *s, const char *extra) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr(extra, *s)) return 0;
  return 1;
}

static long count_arg(const char *name, const char *v) {
  char *end;
  long n = strtol(v, &end, 10);
  if (*v == '\0' || *end != '\0' || n < 0 || n > 100000000L) die("%s: expected a count, got '%s'", name, v);
  return n;
}

static EVP_PKEY *read_private_key(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) die("--private-key: cannot read %s", path);
  EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
  fclose(f);
  if (k == NULL) die("--private-key: %s: %s", path, ossl_reason("not a PEM private key"));
  return k;
}

/* Loads a certificate (its public key and expiry) or a public key. */
static void read_public(Key *k, const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) die("--cert %s: cannot read %s", k->name, path);
  char head[4096];
  size_t n = fread(head, 1, sizeof head - 1, f);
  head[n] = '\0';
  rewind(f);
  if (strstr(head, "-----BEGIN CERTIFICATE-----")) {
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    if (x == NULL) die("--cert %s: %s: %s", k->name, path, ossl_reason("not a PEM certificate"));
    k->pkey = X509_get_pubkey(x);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1) k->not_after = timegm(&tm);
    k->is_cert = 1;
    X509_free(x);
  } else {
    k->pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
  }
  fclose(f);
  if (k->pkey == NULL) die("--cert %s: %s: %s", k->name, path, ossl_reason("not a PEM public key"));
  if (EVP_PKEY_get_base_id(k->pkey) != EVP_PKEY_RSA) die("--cert %s: %s is not an RSA key", k->name, path);
}

static EVP_PKEY_CTX *rsa_ctx(EVP_PKEY *pkey, EVP_MD *md, int sign) {
  EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
  if (c == NULL || (sign ? EVP_PKEY_sign_init(c) : EVP_PKEY_verify_init(c)) <= 0 ||
      EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) <= 0 ||
      EVP_PKEY_CTX_set_signature_md(c, md) <= 0)
    die("%s context: %s", sign ? "sign" : "verify", ossl_reason("failed"));
  return c;
}

static void parse_args(Config *c, int argc, char **argv) {
  memset(c, 0, sizeof *c);
  c->user_agent = "cref";
  c->print_request = -1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) die("%s: expected a value (see the head of scripts/bench/cref/client.c)", a);
    const char *v = argv[++i];
    if (strcmp(a, "--base-url") == 0) c->base_url = v;
    else if (strcmp(a, "--mchid") == 0) c->mchid = v;
    else if (strcmp(a, "--serial") == 0) c->serial = v;
    else if (strcmp(a, "--private-key") == 0) c->private_key = v;
    else if (strcmp(a, "--ca-file") == 0) c->ca_file = v;
    else if (strcmp(a, "--begin") == 0) c->begin = v;
    else if (strcmp(a, "--end") == 0) c->end = v;
    else if (strcmp(a, "--prefix") == 0) c->prefix = v;
    else if (strcmp(a, "--user-agent") == 0) c->user_agent = v;
    else if (strcmp(a, "--sequential") == 0) c->sequential = count_arg(a, v);
    else if (strcmp(a, "--parallel") == 0) c->parallel = count_arg(a, v);
    else if (strcmp(a, "--print-request") == 0) c->print_request = count_arg(a, v);
    else if (strcmp(a, "--warm-up") == 0) c->warm_up = count_arg(a, v);
    else if (strcmp(a, "--send-coupons") == 0) c->send_stock = v;
    else if (strcmp(a, "--appid") == 0) c->appid = v;
    else if (strcmp(a, "--cert") == 0) {
      const char *eq = strchr(v, '=');
      if (eq == NULL || eq == v || eq[1] == '\0') die("--cert: expected NAME=PATH, got '%s'", v);
      if (c->nkeys == MAX_KEYS) die("--cert: more than %d keys", MAX_KEYS);
      Key *k = &c->keys[c->nkeys++];
      k->name = strndup(v, (size_t)(eq - v));
      if (!plain_text(k->name, "_")) die("--cert: bad name '%s'", k->name);
      k->not_after = 0;
      k->pkey = NULL;
      k->verify = NULL;
      read_public(k, eq + 1);
    } else die("unknown option '%s'", a);
  }
  if (!c->base_url || strncmp(c->base_url, "https://", 8) != 0 || c->base_url[8] == '\0')
    die("--base-url: expected https://host[:port][/prefix]");
  if (!c->mchid || !plain_text(c->mchid, "")) die("--mchid: expected the merchant id (digits)");
  if (!c->serial || !plain_text(c->serial, "")) die("--serial: expected the merchant certificate serial (hex)");
  if (!c->private_key) die("--private-key: expected a PEM file");
  if (c->nkeys == 0) die("--cert: expected at least one NAME=PATH");
  if (c->send_stock) {
    if (!plain_text(c->send_stock, "")) die("--send-coupons: expected a stock id (digits)");
    if (!c->appid || !plain_text(c->appid, "_")) die("--appid: expected the appid the coupons are sent under");
  } else {
    if (!c->begin || !plain_text(c->begin, ":+-")) die("--begin: expected an RFC 3339 time");
    if (!c->end || !plain_text(c->end, ":+-")) die("--end: expected an RFC 3339 time");
  }
  c->answer_field = c->send_stock ? "coupon_id" : "stock_id";
  if (!c->prefix || !plain_text(c->prefix, "|_*-")) die("--prefix: expected letters, digits, | _ * -");
  for (const char *s = c->user_agent; *s; s++)
    if (*s == '\r' || *s == '\n') die("--user-agent: a line break");

  /* a base URL with a path (a gateway) puts that prefix in the signed target */
  const char *path = strchr(c->base_url + 8, '/');
  size_t origin = path ? (size_t)(path - c->base_url) : strlen(c->base_url);
  size_t plen = path ? strlen(path) : 0;
  while (plen > 0 && path[plen - 1] == '/') plen--;
  int tn = snprintf(c->target, sizeof c->target, "%.*s%s", (int)plen, path ? path : "", TARGET);
  int un = tn < 0 || (size_t)tn >= sizeof c->target ? -1
           : snprintf(c->url, sizeof c->url, "%.*s%s", (int)origin, c->base_url, c->target);
  if (un < 0 || (size_t)un >= sizeof c->url) die("--base-url: too long");
  if (origin >= sizeof c->origin || plen >= sizeof c->path_prefix) die("--base-url: too long");
  memcpy(c->origin, c->base_url, origin);
  c->origin[origin] = '\0';
  memcpy(c->path_prefix, path ? path : "", plen);
  c->path_prefix[plen] = '\0';
  /* the port: after the host's last ':' that is not inside [IPv6] */
  const char *host_end = c->base_url + origin, *colon = NULL;
  for (const char *q = c->base_url + 8; q < host_end; q++)
    if (*q == ':') colon = q;
    else if (*q == ']') colon = NULL;
  c->port = 443;
  if (colon) {
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (end != host_end || p == 0 || p > 65535) die("--base-url: bad port");
    c->port = (unsigned)p;
  }

  c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
  if (c->sha256 == NULL) die("SHA-256: %s", ossl_reason("unavailable"));
  EVP_PKEY *merchant = read_private_key(c->private_key);
  c->sign = rsa_ctx(merchant, c->sha256, 1); /* holds its own reference */
  EVP_PKEY_free(merchant);
  /* the key answers are asked to be signed with, as the client chooses it:
   * the greatest PUB_KEY_ID_..., else the certificate that expires last */
  const Key *best = NULL, *pub = NULL;
  for (int i = 0; i < c->nkeys; i++) {
    Key *k = &c->keys[i];
    k->verify = rsa_ctx(k->pkey, c->sha256, 0);
    if (strncmp(k->name, "PUB_KEY_ID_", 11) == 0) {
      if (!pub || strcmp(k->name, pub->name) > 0) pub = k;
    } else if (!best || k->not_after > best->not_after ||
               (k->not_after == best->not_after && strcmp(k->name, best->name) > 0)) {
      best = k;
    }
  }
  c->accept = pub ? pub->name : best->name;
}

static void config_free(Config *c) {
  EVP_PKEY_CTX_free(c->sign);
  for (int i = 0; i < c->nkeys; i++) {
    EVP_PKEY_CTX_free(c->keys[i].verify);
    EVP_PKEY_free(c->keys[i].pkey);
    free((char *)c->keys[i].name);
  }
  EVP_MD_free(c->sha256);
}

/* ---- one request ---------------------------------------------------------- */

typedef struct Buf {
  char *p;
  size_t len, cap;
} Buf;

static void buf_add(Buf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) die("out of memory");
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
}

typedef struct Slot {
  CURL *easy;
  struct curl_slist *headers;
  long index;            /* the request's number (its out_request_no suffix) */
  char target[1024];     /* the signed path of a coupon send (its openid in it) */
  char url[1536];
  char body[1024];
  size_t body_len;
  Buf answer;
  char errbuf[CURL_ERROR_SIZE];
} Slot;

static size_t write_cb(char *p, size_t size, size_t n, void *userp) {
  Slot *s = userp;
  if (size * n > (size_t)MAX_RESPONSE - s->answer.len) return 0;
  buf_add(&s->answer, p, size * n);
  return size * n;
}

/* The body of request i: keys in sorted order, as wechatpay.json writes. */
static size_t make_body(const Config *c, long i, char *out, size_t size) {
  int n;
  if (c->send_stock) {
    n = snprintf(out, size, "{\"appid\":\"%s\",\"out_request_no\":\"%s%ld\",\"stock_creator_mchid\":\"%s\","
                 "\"stock_id\":\"%s\"}", c->appid, c->prefix, i, c->mchid, c->send_stock);
    if (n < 0 || (size_t)n >= size) die("request %ld: body too long", i);
    return (size_t)n;
  }
  n = snprintf(out, size,
    "{\"available_begin_time\":\"%s\",\"available_end_time\":\"%s\",\"belong_merchant\":\"%s\","
    "\"coupon_use_rule\":{\"available_merchants\":[\"%s\"],"
    "\"coupon_available_time\":{\"available_begin_time\":\"%s\",\"available_end_time\":\"%s\"},"
    "\"fixed_normal_coupon\":{\"coupon_amount\":100,\"transaction_minimum\":1000}},"
    "\"no_cash\":false,\"out_request_no\":\"%s%ld\",\"stock_name\":\"bench\",\"stock_type\":\"NORMAL\","
    "\"stock_use_rule\":{\"max_amount\":10000,\"max_coupons\":100,\"max_coupons_per_user\":1,"
    "\"natural_person_limit\":false,\"prevent_api_abuse\":false}}",
    c->begin, c->end, c->mchid, c->mchid, c->begin, c->end, c->prefix, i);
  if (n < 0 || (size_t)n >= size) die("request %ld: body too long", i);
  return (size_t)n;
}

/* nonce(out, n): n characters of [0-9A-Za-z], uniformly from the CSPRNG,
 * drawn from a pool refilled 1024 bytes at a time (as quan.crypto.nonce) */
static void nonce(char *out, int n) {
  static const char chars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  static unsigned char pool[1024];
  static size_t left;
  int i = 0;
  while (i < n) {
    if (left == 0) {
      if (RAND_bytes(pool, sizeof pool) != 1) die("nonce: %s", ossl_reason("no randomness"));
      left = sizeof pool;
    }
    unsigned char *r = pool + sizeof pool - left--;
    if (*r < 248) out[i++] = chars[*r % 62]; /* 248 = 4 * 62: no bias */
    *r = 0;
  }
  out[n] = '\0';
}

static void add_header(Slot *s, const char *line) {
  struct curl_slist *l = curl_slist_append(s->headers, line);
  if (l == NULL) die("out of memory");
  s->headers = l;
}

/* The fixed header lines, in the order quan's client writes them. */
static void fixed_headers(const Config *c, Slot *s) {
  char line[1200];
  add_header(s, "Accept: application/json");
  add_header(s, "Content-Type: application/json");
  snprintf(line, sizeof line, "User-Agent: %s", c->user_agent);
  add_header(s, line);
  snprintf(line, sizeof line, "Wechatpay-Serial: %s", c->accept);
  add_header(s, line);
}

/* Sets slot s up for request i: body, signature, headers. */
static void prepare(const Config *c, Slot *s, long i) {
  s->index = i;
  s->body_len = make_body(c, i, s->body, sizeof s->body);
  s->answer.len = 0;
  s->errbuf[0] = '\0';
  char ts[32], nc[33], msg[2048];
  snprintf(ts, sizeof ts, "%lld", (long long)time(NULL));
  nonce(nc, 32);
  const char *target = c->target;
  if (c->send_stock) { /* the openid is in the path: a target and URL per request */
    char tail[256];
    snprintf(tail, sizeof tail, COUPONS_TARGET, c->prefix, i);
    int tn = snprintf(s->target, sizeof s->target, "%s%s", c->path_prefix, tail);
    int un = tn < 0 || (size_t)tn >= sizeof s->target ? -1 : snprintf(s->url, sizeof s->url, "%s%s", c->origin, s->target);
    if (un < 0 || (size_t)un >= sizeof s->url) die("request %ld: URL too long", i);
    curl_easy_setopt(s->easy, CURLOPT_URL, s->url);
    target = s->target;
  }
  int mn = snprintf(msg, sizeof msg, "POST\n%s\n%s\n%s\n%s\n", target, ts, nc, s->body);
  if (mn < 0 || (size_t)mn >= sizeof msg) die("request %ld: message too long", i);
  unsigned char md[32], sig[1024], b64[1400];
  size_t siglen = sizeof sig;
  if (!EVP_Digest(msg, (size_t)mn, md, NULL, c->sha256, NULL) ||
      EVP_PKEY_sign(c->sign, sig, &siglen, md, sizeof md) <= 0)
    die("request %ld: sign: %s", i, ossl_reason("failed"));
  EVP_EncodeBlock(b64, sig, (int)siglen);
  char auth[2048];
  snprintf(auth, sizeof auth,
           "Authorization: WECHATPAY2-SHA256-RSA2048 mchid=\"%s\",serial_no=\"%s\",timestamp=\"%s\","
           "nonce_str=\"%s\",signature=\"%s\"", c->mchid, c->serial, ts, nc, b64);
  curl_slist_free_all(s->headers);
  s->headers = NULL;
  fixed_headers(c, s);
  add_header(s, auth);
  add_header(s, "Expect:"); /* no 100-continue round trip, as quan.http */
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)s->body_len);
  curl_easy_setopt(s->easy, CURLOPT_POSTFIELDS, s->body);
  curl_easy_setopt(s->easy, CURLOPT_HTTPHEADER, s->headers);
}

/* An easy handle with the options quan.http sets on every transfer; only
 * the body and the headers change from one request to the next. */
static void slot_init(const Config *c, Slot *s, CURLSH *share) {
  memset(s, 0, sizeof *s);
  CURL *h = s->easy = curl_easy_init();
  if (h == NULL) die("cannot create a libcurl handle");
  curl_easy_setopt(h, CURLOPT_SHARE, share);
  curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)MAX_RESPONSE);
  curl_easy_setopt(h, CURLOPT_PRIVATE, s);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, s->errbuf);
  curl_easy_setopt(h, CURLOPT_URL, c->url);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, c->user_agent);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, s);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L); /* the client's default timeout */
  if (c->ca_file) curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
}

/* ---- checking an answer --------------------------------------------------- */

/* Copies the value of response header name into out (cap bytes); 0 when
 * it is absent or empty. An answer that repeats it, or whose value does not
 * fit, fails (quan would join repeated values with ", "). */
static int header(Slot *s, const char *name, char *out, size_t cap) {
  struct curl_header *h;
  if (curl_easy_header(s->easy, name, 0, CURLH_HEADER, -1, &h) != CURLHE_OK) return 0;
  if (h->amount > 1) die("request %ld: verify: response header %s repeated", s->index, name);
  size_t n = strlen(h->value);
  if (n >= cap) die("request %ld: verify: response header %s longer than %zu bytes", s->index, name, cap - 1);
  memcpy(out, h->value, n + 1);
  return n > 0;
}

/* the key of serial: an exact match, else a case-insensitive one for hex */
static Key *lookup(Config *c, const char *serial) {
  for (int i = 0; i < c->nkeys; i++)
    if (strcmp(c->keys[i].name, serial) == 0) return &c->keys[i];
  for (const char *p = serial; *p; p++)
    if (!isxdigit((unsigned char)*p)) return NULL;
  for (int i = 0; i < c->nkeys; i++)
    if (strcasecmp(c->keys[i].name, serial) == 0) return &c->keys[i];
  return NULL;
}

/* strict base64 of the signature into out; its length, or -1 */
static int unbase64(const char *s, unsigned char *out, size_t cap) {
  size_t n = strlen(s);
  if (n == 0 || n % 4 != 0 || n / 4 * 3 > cap) return -1;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)s[i];
    if (!(isalnum(c) || c == '+' || c == '/' || (c == '=' && i >= n - 2))) return -1;
    if (c == '=' && i == n - 2 && s[n - 1] != '=') return -1;
  }
  int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
  if (got < 0) return -1;
  return got - (s[n - 1] == '=') - (s[n - 2] == '=');
}

/* Verifies slot s's 2xx answer as wechatpay.verify.check does. */
static void verify(Config *c, Slot *s) {
  static Buf msg; /* reused: the signed message of each answer */
  char ts[64], nc[1024], sig[4096], serial[256];
  ts[0] = nc[0] = sig[0] = serial[0] = '\0'; /* the first empty one is the missing one */
  if (!header(s, "Wechatpay-Timestamp", ts, sizeof ts) || !header(s, "Wechatpay-Nonce", nc, sizeof nc) ||
      !header(s, "Wechatpay-Signature", sig, sizeof sig) || !header(s, "Wechatpay-Serial", serial, sizeof serial)) {
    const char *name = !*ts ? "Wechatpay-Timestamp" : !*nc ? "Wechatpay-Nonce" : !*sig ? "Wechatpay-Signature"
                                                                                       : "Wechatpay-Serial";
    die("request %ld: verify: response header %s missing", s->index, name);
  }
  Key *k = lookup(c, serial);
  if (k == NULL) die("request %ld: verify: response signed by unknown serial %s", s->index, serial);
  size_t tl = strlen(ts);
  if (tl > 18 || strspn(ts, "0123456789") != tl)
    die("request %ld: verify: response timestamp '%s' is not epoch seconds", s->index, ts);
  long long skew = (long long)time(NULL) - atoll(ts);
  if (skew > MAX_SKEW || skew < -MAX_SKEW)
    die("request %ld: verify: response timestamp %s is %lld s from now (allowed ± %d s)", s->index, ts, skew, MAX_SKEW);
  /* the message: timestamp \n nonce \n body \n, over the bytes received */
  msg.len = 0;
  buf_add(&msg, ts, tl);
  buf_add(&msg, "\n", 1);
  buf_add(&msg, nc, strlen(nc));
  buf_add(&msg, "\n", 1);
  buf_add(&msg, s->answer.p ? s->answer.p : "", s->answer.len);
  buf_add(&msg, "\n", 1);
  unsigned char raw[3072], md[32];
  int rn = unbase64(sig, raw, sizeof raw);
  if (rn < 0) die("request %ld: verify: signature is not base64", s->index);
  if (rn != EVP_PKEY_get_size(k->pkey))
    die("request %ld: verify: signature is %d bytes, expected %d", s->index, rn, EVP_PKEY_get_size(k->pkey));
  if (!EVP_Digest(msg.p, msg.len, md, NULL, c->sha256, NULL) ||
      EVP_PKEY_verify(k->verify, raw, (size_t)rn, md, sizeof md) != 1)
    die("request %ld: verify: response signature does not verify", s->index);
}

/* A strict JSON reader (RFC 8259) that builds nothing: it walks the whole
 * text, as a decoder must, and keeps where the top-level string named
 * `field` ("stock_id", or "coupon_id") is. */
typedef struct Json {
  const char *p, *end;
  const char *field;    /* the member looked for */
  const char *stock_id; /* the raw characters between the quotes */
  size_t stock_id_len;
  int stock_id_string;
} Json;

static void ws(Json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int json_string(Json *j) {
  if (j->p >= j->end || *j->p != '"') return 0;
  j->p++;
  while (j->p < j->end) {
    unsigned char ch = (unsigned char)*j->p++;
    if (ch == '"') return 1;
    if (ch < 0x20) return 0;
    if (ch == '\\') {
      if (j->p >= j->end) return 0;
      char e = *j->p++;
      if (e == 'u') {
        for (int i = 0; i < 4; i++)
          if (j->p >= j->end || !isxdigit((unsigned char)*j->p++)) return 0;
      } else if (!strchr("\"\\/bfnrt", e)) {
        return 0;
      }
    }
  }
  return 0;
}

static int digits(Json *j) {
  const char *p0 = j->p;
  while (j->p < j->end && isdigit((unsigned char)*j->p)) j->p++;
  return j->p > p0;
}

static int number(Json *j) {
  if (j->p < j->end && *j->p == '-') j->p++;
  if (j->p < j->end && *j->p == '0') j->p++;
  else if (!digits(j)) return 0;
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    if (!digits(j)) return 0;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
    if (!digits(j)) return 0;
  }
  return 1;
}

static int literal(Json *j, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, word, n) != 0) return 0;
  j->p += n;
  return 1;
}

static int value(Json *j, int depth);

/* members of an object; at depth 1 the member j->field is remembered */
static int object(Json *j, int depth) {
  j->p++; /* { */
  ws(j);
  if (j->p < j->end && *j->p == '}') {
    j->p++;
    return 1;
  }
  for (;;) {
    ws(j);
    const char *k = j->p;
    if (!json_string(j)) return 0;
    size_t fl = strlen(j->field);
    int is_id = depth == 1 && (size_t)(j->p - k) == fl + 2 && memcmp(k + 1, j->field, fl) == 0;
    ws(j);
    if (j->p >= j->end || *j->p++ != ':') return 0;
    ws(j);
    const char *v = j->p;
    if (!value(j, depth)) return 0;
    if (is_id) {
      j->stock_id_string = *v == '"';
      j->stock_id = v + 1;
      j->stock_id_len = (size_t)(j->p - v) - 2;
    }
    ws(j);
    if (j->p >= j->end) return 0;
    char ch = *j->p++;
    if (ch == '}') return 1;
    if (ch != ',') return 0;
  }
}

static int array(Json *j, int depth) {
  j->p++; /* [ */
  ws(j);
  if (j->p < j->end && *j->p == ']') {
    j->p++;
    return 1;
  }
  for (;;) {
    ws(j);
    if (!value(j, depth)) return 0;
    ws(j);
    if (j->p >= j->end) return 0;
    char ch = *j->p++;
    if (ch == ']') return 1;
    if (ch != ',') return 0;
  }
}

static int value(Json *j, int depth) {
  if (j->p >= j->end || depth >= MAX_DEPTH) return 0;
  switch (*j->p) {
  case '{': return object(j, depth + 1);
  case '[': return array(j, depth + 1);
  case '"': return json_string(j);
  case 't': return literal(j, "true");
  case 'f': return literal(j, "false");
  case 'n': return literal(j, "null");
  default: return number(j);
  }
}

/* Checks slot s's finished transfer: status, signature, body. */
static void finish(Config *c, Slot *s, CURLcode rc) {
  if (rc != CURLE_OK)
    die("request %ld: %s", s->index, s->errbuf[0] ? s->errbuf : curl_easy_strerror(rc));
  long status = 0;
  curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &status);
  if (status < 200 || status > 299)
    die("request %ld: HTTP %ld: %.200s", s->index, status, s->answer.p ? s->answer.p : "");
  verify(c, s);
  Json j = {s->answer.p ? s->answer.p : "", NULL, c->answer_field, NULL, 0, 0};
  j.end = j.p + s->answer.len;
  ws(&j);
  int ok = j.p < j.end && *j.p == '{' && value(&j, 0);
  ws(&j);
  if (!ok || j.p != j.end) die("request %ld: answer is not a valid JSON object", s->index);
  if (j.stock_id == NULL || !j.stock_id_string || j.stock_id_len == 0)
    die("request %ld: answer has no %s string", s->index, c->answer_field);
}

/* ---- running requests ----------------------------------------------------- */

typedef struct Client {
  Config *config;
  CURLM *multi;
  Slot slots[PARALLEL];
  long next;             /* the number of the next request */
} Client;

/* Drives the multi until no transfer is left, starting a new request in a
 * slot whose transfer finished while fewer than `more` have been started. */
static void run(Client *cl, int started, long more) {
  int running = started;
  while (running > 0) {
    int still;
    CURLMcode mc = curl_multi_perform(cl->multi, &still);
    if (mc != CURLM_OK) die("curl multi: %s", curl_multi_strerror(mc));
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(cl->multi, &left))) {
      if (m->msg != CURLMSG_DONE) continue;
      Slot *s;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&s);
      CURLcode rc = m->data.result;
      curl_multi_remove_handle(cl->multi, s->easy);
      running--;
      finish(cl->config, s, rc);
      if (more > 0) {
        more--;
        prepare(cl->config, s, cl->next++);
        curl_multi_add_handle(cl->multi, s->easy);
        running++;
      }
    }
    if (running > 0 && (mc = curl_multi_poll(cl->multi, NULL, 0, 1000, NULL)) != CURLM_OK)
      die("curl multi: %s", curl_multi_strerror(mc));
  }
}

/* n requests one after the other */
static void sequential(Client *cl, long n) {
  for (long k = 0; k < n; k++) {
    prepare(cl->config, &cl->slots[0], cl->next++);
    curl_multi_add_handle(cl->multi, cl->slots[0].easy);
    run(cl, 1, 0);
  }
}

/* n requests, PARALLEL in flight */
static void parallel(Client *cl, long n) {
  int started = 0;
  for (; started < PARALLEL && started < n; started++) {
    prepare(cl->config, &cl->slots[started], cl->next++);
    curl_multi_add_handle(cl->multi, cl->slots[started].easy);
  }
  run(cl, started, n - started);
}

/* The TCP connections open from this machine to the server's port, as
 * /proc/self/net/tcp and tcp6 list them (state 01, ESTABLISHED): the
 * client's own, as it is the only one talking to its server meanwhile. */
static int connections(unsigned port) {
  static const char *const files[] = {"/proc/self/net/tcp", "/proc/self/net/tcp6"};
  int n = 0;
  for (int i = 0; i < 2; i++) {
    FILE *f = fopen(files[i], "r");
    if (f == NULL) continue;
    char line[512], remote[64];
    unsigned state;
    while (fgets(line, sizeof line, f))
      if (sscanf(line, " %*d: %*s %63s %x", remote, &state) == 2 && state == 1) {
        const char *colon = strrchr(remote, ':');
        if (colon && strtoul(colon + 1, NULL, 16) == port) n++;
      }
    fclose(f);
  }
  return n;
}

/* One request, then w with PARALLEL in flight, then bursts of PARALLEL
 * until PARALLEL connections are open (at most 64 bursts). */
static void warm_up(Client *cl, long w) {
  sequential(cl, 1);
  parallel(cl, w);
  for (int bursts = 0; bursts < 64 && connections(cl->config->port) < PARALLEL; bursts++)
    parallel(cl, PARALLEL);
}

static void measured(Client *cl, const char *phase, void (*fn)(Client *, long), long n) {
  double c0 = cputime(), w0 = wallclock();
  fn(cl, n);
  double cpu = cputime() - c0, wall = wallclock() - w0;
  phase_marker();
  printf("%s_requests %ld\n%s_cpu_s %.6f\n%s_wall_s %.6f\n%s_maxrss_kib %ld\n", phase, n, phase, cpu, phase, wall,
         phase, maxrss());
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) die("libcurl: cannot initialise");
  Config config;
  parse_args(&config, argc, argv);
  Client cl = {.config = &config, .next = 1};
  if (config.print_request >= 0) {
    Slot s = {0};
    fixed_headers(&config, &s);
    for (struct curl_slist *l = s.headers; l; l = l->next) printf("%s\n", l->data);
    char body[1024];
    make_body(&config, config.print_request, body, sizeof body);
    printf("\n%s\n", body);
    curl_slist_free_all(s.headers);
    config_free(&config);
    return 0;
  }
  cl.multi = curl_multi_init();
  CURLSH *share = curl_share_init();
  if (cl.multi == NULL || share == NULL) die("libcurl: cannot create a multi handle");
  curl_share_setopt(share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  curl_multi_setopt(cl.multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  curl_multi_setopt(cl.multi, CURLMOPT_MAXCONNECTS, 64L);
  for (int i = 0; i < PARALLEL; i++) slot_init(&config, &cl.slots[i], share);
  printf("ready_cpu_s %.6f\n", cputime());
  if (config.warm_up > 0) {
    warm_up(&cl, config.warm_up);
    printf("warm_up_requests %ld\nwarm_up_connections %d\n", cl.next - 1, connections(config.port));
    fflush(stdout);
  }
  phase_marker();
  if (config.sequential > 0) measured(&cl, "sequential", sequential, config.sequential);
  if (config.parallel > 0) measured(&cl, "parallel", parallel, config.parallel);
  if (config.sequential > 0 || config.parallel > 0) printf("final_connections %d\n", connections(config.port));
  for (int i = 0; i < PARALLEL; i++) {
    curl_easy_cleanup(cl.slots[i].easy);
    curl_slist_free_all(cl.slots[i].headers);
    free(cl.slots[i].answer.p);
  }
  curl_multi_cleanup(cl.multi);
  curl_share_cleanup(share);
  config_free(&config);
  curl_global_cleanup();
  return 0;
}
