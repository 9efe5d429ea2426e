/* lhttp.c: quan.http, HTTP(S) requests over libcurl.
 *
 * One engine per Lua state (an upvalue of the module's functions, never a C
 * global) owns one CURLM handle, so every request made from the state shares
 * one connection cache, DNS cache and TLS session cache. The engine watches
 * libcurl's sockets itself with poll(2) (CURLMOPT_SOCKETFUNCTION and
 * TIMERFUNCTION), which lets a wait end early on EINTR: the host's SIGINT
 * handler sets a hook that raises the interrupt once Lua code runs again.
 *
 * Userdata:
 *   quan.http.engine    the CURLM, its sockets and timer. User value 1: table
 *                       lightuserdata(Transfer *) -> transfer, every transfer
 *                       inside the CURLM.
 *   quan.http.multi     a view on the engine: its own ids and completions.
 *                       User values: 1 engine, 2 completion queue (array),
 *                       3 table id -> transfer in flight.
 *   quan.http.transfer  one request: the easy handle and every buffer it
 *                       needs, released by __gc even when a Lua error unwinds.
 *                       User values: 1 engine, 2 owning multi (nil: sync),
 *                       3 the request body, which libcurl sends from.
 *
 * Bad arguments raise; what the network causes returns nil, message, code. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <curl/curl.h>
#include "quan.h"

#define ENGINE_MT "quan.http.engine"
#define MULTI_MT "quan.http.multi"
#define TRANSFER_MT "quan.http.transfer"
#define HEADERS_MT "quan.http.headers"

#define DEFAULT_CONNECT_TIMEOUT_MS 10000L
#define DEFAULT_MAX_RESPONSE ((lua_Integer)64 << 20) /* bytes of an answer body kept */
#define POOL_MAX 32       /* idle easy handles kept for reuse */
#define MAX_CONNECTS 64L  /* idle connections kept open in the cache */

typedef struct Engine {
  CURLM *multi;           /* NULL once released */
  CURLSH *share;          /* TLS session cache shared by every transfer */
  CURL *pool[POOL_MAX];   /* finished easy handles, reset, ready for reuse */
  int npool;
  struct pollfd *fds;     /* the sockets libcurl asked us to watch */
  struct pollfd *ready;   /* scratch copy of fds that had events */
  int nfds, capfds;
  int oom;                /* a socket callback could not allocate */
  long long deadline;     /* monotonic ms of libcurl's timer, -1 none */
  lua_Integer last_id;
} Engine;

typedef struct Multi {
  Engine *engine;
  int pending;            /* transfers added and not yet completed */
  int closed;
} Multi;

typedef struct Buf {
  char *p;
  size_t len, cap;
} Buf;

typedef struct Transfer {
  Engine *engine;
  CURL *easy;
  struct curl_slist *headers;
  char *what;             /* "METHOD url", the context of messages */
  Buf body;               /* response body */
  int attempts;           /* times libcurl was about to send (prereq_cb) */
  int resend_refused;     /* prereq_cb refused a second attempt */
  Buf head;               /* response header lines, each ending in '\0' */
  int head_lines;         /* how many */
  lua_Integer id;
  int in_multi;           /* added to engine->multi */
  int done;
  int via_proxy;          /* an explicit, non-empty proxy was given */
  size_t max_response;    /* body bytes kept at most (max_response) */
  int too_large;          /* the body went past max_response */
  char *output;           /* a 2xx body goes to this file (output), or NULL */
  FILE *out;              /* open on output while a 2xx body is written */
  int out_state;          /* 0 no body yet, 1 to the file, 2 in memory */
  size_t out_len;         /* bytes written to the file */
  int out_errno;          /* why the file could not be written, or 0 */
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
} Transfer;

/* ---- small helpers ------------------------------------------------------ */

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Appends n bytes to b; 0 when out of memory. */
static int buf_add(Buf *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024; /* an API answer's headers, or its body, in one */
    while (cap < b->len + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) return 0;
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 1;
}

static void buf_free(Buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* Raises "http request: <message>" at the caller's position. */
static int req_error(lua_State *L, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  luaL_where(L, 1);
  lua_pushliteral(L, "http request: ");
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_concat(L, 3);
  return lua_error(L);
}

/* ---- engine: sockets and timer ------------------------------------------ */

/* libcurl tells us which socket to watch for what. */
static int socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp) {
  Engine *e = userp;
  (void)easy;
  (void)socketp;
  int i = 0;
  while (i < e->nfds && e->fds[i].fd != s) i++;
  if (what == CURL_POLL_REMOVE) {
    if (i < e->nfds) e->fds[i] = e->fds[--e->nfds];
    return 0;
  }
  if (i == e->nfds) {
    if (e->nfds == e->capfds) {
      int cap = e->capfds ? e->capfds * 2 : 16;
      struct pollfd *f = realloc(e->fds, sizeof *f * (size_t)cap);
      if (f == NULL) goto oom;
      e->fds = f;
      struct pollfd *r = realloc(e->ready, sizeof *r * (size_t)cap);
      if (r == NULL) goto oom;
      e->ready = r;
      e->capfds = cap;
    }
    e->fds[i].fd = s;
    e->nfds++;
  }
  e->fds[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                             ((what & CURL_POLL_OUT) ? POLLOUT : 0));
  e->fds[i].revents = 0;
  return 0;
oom:
  e->oom = 1;
  return -1;
}

/* libcurl asks to be called back after timeout_ms (-1: never). */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp) {
  Engine *e = userp;
  (void)multi;
  e->deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
  return 0;
}

static void engine_timeout(Engine *e) {
  int running;
  e->deadline = -1;
  curl_multi_socket_action(e->multi, CURL_SOCKET_TIMEOUT, 0, &running);
}

/* Waits up to wait_ms (-1: until libcurl's timer) for socket activity and
 * lets libcurl act on it. Returns 1 when the wait was interrupted by a
 * signal, -1 when poll failed otherwise (errno tells why; waiting again
 * would only spin), 0 otherwise. Does not touch the Lua stack. */
static int engine_step(Engine *e, long long wait_ms) {
  long long now = now_ms();
  if (e->deadline >= 0 && e->deadline <= now) {
    engine_timeout(e);
    return 0;
  }
  long long t = wait_ms;
  if (e->deadline >= 0 && (t < 0 || e->deadline - now < t)) t = e->deadline - now;
  if (t < 0 || t > 1000) t = 1000; /* never sleep blind for long */
  int n = poll(e->fds, (nfds_t)e->nfds, (int)t);
  if (n < 0) return errno == EINTR ? 1 : -1;
  /* the callbacks below may change e->fds: act on a copy */
  int k = 0;
  for (int i = 0; i < e->nfds && k < n; i++)
    if (e->fds[i].revents) e->ready[k++] = e->fds[i];
  for (int i = 0; i < k; i++) {
    short r = e->ready[i].revents;
    int ev = ((r & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0) |
             ((r & POLLOUT) ? CURL_CSELECT_OUT : 0) |
             ((r & (POLLERR | POLLNVAL)) ? CURL_CSELECT_ERR : 0);
    int running;
    curl_multi_socket_action(e->multi, e->ready[i].fd, ev, &running);
  }
  if (e->deadline >= 0 && e->deadline <= now_ms()) engine_timeout(e);
  return 0;
}

/* ---- transfers ------------------------------------------------------------ */

/* An easy handle for a new transfer: a pooled one (options reset; its
 * connections stay in the multi's cache) or a fresh one. */
static CURL *engine_easy(Engine *e) {
  if (e->npool > 0) return e->pool[--e->npool];
  CURL *h = curl_easy_init();
  if (h && e->share) curl_easy_setopt(h, CURLOPT_SHARE, e->share);
  return h;
}

/* Gives an easy handle back: reset into the pool, or freed when the pool
 * is full or the engine is gone. curl_easy_reset keeps the share. */
static void engine_unease(Engine *e, CURL *h) {
  if (e->multi && e->npool < POOL_MAX) {
    curl_easy_reset(h);
    e->pool[e->npool++] = h;
  } else {
    curl_easy_cleanup(h);
  }
}

/* Frees everything a transfer holds; idempotent. */
static void transfer_release(Transfer *t) {
  if (t->easy) {
    if (t->in_multi && t->engine->multi) curl_multi_remove_handle(t->engine->multi, t->easy);
    engine_unease(t->engine, t->easy);
    t->easy = NULL;
  }
  t->in_multi = 0;
  curl_slist_free_all(t->headers);
  t->headers = NULL;
  free(t->what);
  t->what = NULL;
  buf_free(&t->body);
  buf_free(&t->head);
  if (t->out) { /* a transfer abandoned midway: its partial file goes */
    fclose(t->out);
    t->out = NULL;
    unlink(t->output);
  }
  free(t->output);
  t->output = NULL;
}

static int transfer_gc(lua_State *L) {
  transfer_release(luaL_checkudata(L, 1, TRANSFER_MT));
  return 0;
}

/* output_open(t) -> 1 when t->output is open for writing (created or
 * truncated, mode 0600: a flow file is the merchant's business); 0 with
 * t->out_errno set */
static int output_open(Transfer *t) {
  int fd = open(t->output, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  t->out = fd < 0 ? NULL : fdopen(fd, "wb");
  if (t->out == NULL) {
    t->out_errno = errno ? errno : EIO;
    if (fd >= 0) close(fd);
    return 0;
  }
  t->out_state = 1;
  return 1;
}

/* status_of(t) -> the HTTP status received so far (0: none yet) */
static long status_of(Transfer *t) {
  long status = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  return status;
}

static size_t write_cb(char *p, size_t size, size_t n, void *userp) {
  Transfer *t = userp;
  if (t->output && t->out_state == 0) { /* the first bytes: a 2xx body goes to the file */
    long status = status_of(t);
    if (status >= 200 && status < 300) {
      if (!output_open(t)) return 0;
    } else {
      t->out_state = 2;
    }
  }
  if (t->out_state == 1) {
    if (size * n > t->max_response - t->out_len) {
      t->too_large = 1;
      return 0;
    }
    if (fwrite(p, 1, size * n, t->out) != size * n) {
      t->out_errno = errno ? errno : EIO;
      return 0;
    }
    t->out_len += size * n;
    return size * n;
  }
  if (size * n > t->max_response - t->body.len) {
    t->too_large = 1;
    return 0;
  }
  return buf_add(&t->body, p, size * n) ? size * n : 0;
}

/* Keeps the header lines of the final response: a status line (a redirect,
 * a 100 Continue, a proxy's answer before it) starts the list afresh. */
static size_t header_cb(char *p, size_t size, size_t n, void *userp) {
  Transfer *t = userp;
  size_t len = size * n;
  size_t l = len;
  while (l > 0 && (p[l - 1] == '\r' || p[l - 1] == '\n')) l--;
  if (l >= 5 && memcmp(p, "HTTP/", 5) == 0) {
    t->head.len = 0;
    t->head_lines = 0;
    return len;
  }
  if (l == 0) return len;
  if (!buf_add(&t->head, p, l) || !buf_add(&t->head, "", 1)) return 0;
  t->head_lines++;
  return len;
}

/* ---- the request table ---------------------------------------------------- */

/* [] -> [t[k]], raw: a string read stays alive as long as the table does. */
static int rawfield(lua_State *L, int idx, const char *k) {
  lua_pushstring(L, k);
  return lua_rawget(L, idx < 0 ? idx - 1 : idx);
}

static const char *const fields[] = {"method", "url", "headers", "body", "timeout",
                                     "connect_timeout", "cafile", "proxy", "max_response", "resend", "output", NULL};

/* RFC 9110 tchar, without locale lookups */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  switch (c) {
  case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
  case '-': case '.': case '^': case '_': case '`': case '|': case '~':
    return 1;
  default:
    return 0;
  }
}

static int is_token(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (!is_tchar((unsigned char)*s)) return 0;
  return 1;
}

static int has_break(const char *s, size_t n) {
  return memchr(s, '\n', n) || memchr(s, '\r', n) || memchr(s, '\0', n);
}

/* Checks one header line "Name: value" (or the pair name, value). */
static void check_header(lua_State *L, const char *name, size_t nlen, const char *value, size_t vlen) {
  char tmp[128];
  size_t k = nlen < sizeof tmp - 1 ? nlen : sizeof tmp - 1;
  memcpy(tmp, name, k);
  tmp[k] = '\0';
  if (nlen == 0 || k < nlen || memchr(name, '\0', nlen) || !is_token(tmp))
    req_error(L, "bad header name '%s'", tmp);
  if (has_break(value, vlen)) req_error(L, "header '%s' has a line break", tmp);
}

/* The fields of a request table, as check_request reads them once: the
 * strings stay alive as long as the table holds them. */
typedef struct Request {
  const char *method, *url, *body, *cafile, *proxy, *output; /* NULL: absent */
  size_t blen;
  lua_Number timeout, connect_timeout;                       /* seconds, 0: absent */
  lua_Integer max_response;                                  /* 0: absent */
  int no_resend;                                             /* resend = false */
} Request;

/* Validates the request table at idx without allocating anything, and reads
 * its fields into r. */
static void check_request(lua_State *L, int idx, Request *r) {
  if (!lua_istable(L, idx))
    luaL_typeerror(L, idx, "table");
  memset(r, 0, sizeof *r);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int f = -1;
    if (k)
      for (int i = 0; fields[i]; i++)
        if (k[0] == fields[i][0] && strcmp(k, fields[i]) == 0) {
          f = i;
          break;
        }
    if (f < 0) {
      if (k) req_error(L, "unknown field '%s'", k);
      req_error(L, "unknown field of type %s", luaL_typename(L, -2));
    }
    int ty = lua_type(L, -1);
    switch (f) {
    case 0: /* method */
      if (ty != LUA_TSTRING) req_error(L, "'method' must be a string, got %s", luaL_typename(L, -1));
      if (lua_rawlen(L, -1) > 32 || !is_token(lua_tostring(L, -1)))
        req_error(L, "bad method '%s'", lua_tostring(L, -1));
      r->method = lua_tostring(L, -1);
      break;
    case 2: /* headers */
      if (ty != LUA_TTABLE) req_error(L, "'headers' must be a table, got %s", luaL_typename(L, -1));
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        size_t vl;
        if (lua_type(L, -2) == LUA_TNUMBER) {
          if (lua_type(L, -1) != LUA_TSTRING)
            req_error(L, "header entry %I must be a string \"Name: value\", got %s",
                      lua_tointeger(L, -2), luaL_typename(L, -1));
          const char *line = lua_tolstring(L, -1, &vl);
          const char *colon = memchr(line, ':', vl);
          if (colon == NULL) req_error(L, "header '%s' has no ':'", line);
          size_t nl = (size_t)(colon - line);
          while (nl > 0 && (line[nl - 1] == ' ' || line[nl - 1] == '\t')) nl--;
          check_header(L, line, nl, colon + 1, vl - (size_t)(colon + 1 - line));
        } else if (lua_type(L, -2) == LUA_TSTRING) {
          size_t nl;
          const char *name = lua_tolstring(L, -2, &nl);
          int vt = lua_type(L, -1);
          if (vt != LUA_TSTRING && vt != LUA_TNUMBER)
            req_error(L, "header '%s' must be a string, got %s", name, luaL_typename(L, -1));
          /* tolstring on a number converts it in place: that is the value
           * slot, not the key, so lua_next stays valid */
          const char *v = lua_tolstring(L, -1, &vl);
          check_header(L, name, nl, v, vl);
        } else {
          req_error(L, "header keys must be strings or integers, got %s", luaL_typename(L, -2));
        }
        lua_pop(L, 1);
      }
      break;
    case 4: /* timeout */
    case 5: /* connect_timeout */
      if (ty != LUA_TNUMBER) req_error(L, "'%s' must be a number, got %s", k, luaL_typename(L, -1));
      if (!(lua_tonumber(L, -1) > 0)) req_error(L, "'%s' must be positive", k);
      *(f == 4 ? &r->timeout : &r->connect_timeout) = lua_tonumber(L, -1);
      break;
    case 8: /* max_response */
      if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
        req_error(L, "'max_response' must be a positive integer (bytes), got %s", luaL_typename(L, -1));
      r->max_response = lua_tointeger(L, -1);
      break;
    case 9: /* resend */
      if (ty != LUA_TBOOLEAN) req_error(L, "'resend' must be a boolean, got %s", luaL_typename(L, -1));
      r->no_resend = !lua_toboolean(L, -1);
      break;
    default: /* url, body, cafile, proxy, output */
      if (ty != LUA_TSTRING) req_error(L, "'%s' must be a string, got %s", k, luaL_typename(L, -1));
      size_t n;
      const char *v = lua_tolstring(L, -1, &n);
      if (f == 3) { /* body */
        r->body = v;
        r->blen = n;
        break;
      }
      if (strlen(v) != n) req_error(L, "'%s' contains a NUL byte", k); /* C strings for libcurl */
      if (f == 1) r->url = v;
      else if (f == 6) r->cafile = v;
      else if (f == 7) r->proxy = v;
      else r->output = v;
      break;
    }
    lua_pop(L, 1);
  }
  if (r->url == NULL) req_error(L, "'url' is required");
}

static void must(lua_State *L, CURLcode rc) {
  if (rc == CURLE_OUT_OF_MEMORY) luaL_error(L, "http: out of memory");
  if (rc != CURLE_OK) luaL_error(L, "http: %s", curl_easy_strerror(rc));
}

static void add_header(lua_State *L, Transfer *t, const char *line) {
  struct curl_slist *l = curl_slist_append(t->headers, line);
  if (l == NULL) luaL_error(L, "http: out of memory");
  t->headers = l;
}

/* Builds the header list of the request at idx into t->headers. */
static void set_headers(lua_State *L, Transfer *t, int idx, int has_body) {
  int expect = 0, ctype = 0; /* the request sets these itself */
  if (rawfield(L, idx, "headers") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      const char *name;
      size_t nlen;
      if (lua_type(L, -2) == LUA_TNUMBER) {
        /* "Name: value"; an empty value is written "Name;" for libcurl */
        size_t n;
        const char *line = lua_tolstring(L, -1, &n);
        const char *colon = strchr(line, ':');
        const char *v = colon + 1;
        name = line;
        nlen = (size_t)(colon - line);
        while (nlen > 0 && (line[nlen - 1] == ' ' || line[nlen - 1] == '\t')) nlen--;
        while (*v == ' ' || *v == '\t') v++;
        if (*v == '\0') {
          lua_pushlstring(L, line, (size_t)(colon - line));
          lua_pushliteral(L, ";");
          lua_concat(L, 2);
          add_header(L, t, lua_tostring(L, -1));
          lua_pop(L, 1);
        } else {
          add_header(L, t, line);
        }
      } else {
        name = lua_tolstring(L, -2, &nlen);
        const char *v = lua_tostring(L, -1);
        if (*v == '\0') lua_pushfstring(L, "%s;", name);
        else lua_pushfstring(L, "%s: %s", name, v);
        add_header(L, t, lua_tostring(L, -1));
        lua_pop(L, 1);
      }
      if (nlen == 6 && strncasecmp(name, "expect", 6) == 0) expect = 1;
      else if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0) ctype = 1;
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  /* no "Expect: 100-continue" round trip, no form content type by default */
  if (!expect) add_header(L, t, "Expect:");
  if (has_body && !ctype) add_header(L, t, "Content-Type:");
}

/* ms(seconds, dflt) -> milliseconds for libcurl, dflt when seconds is 0 */
static long ms(lua_Number seconds, long dflt) {
  if (seconds == 0) return dflt;
  lua_Number s = seconds * 1000;
  return s > 2e9 ? 2000000000L : s < 1 ? 1 : (long)s;
}

/* libcurl's pre-request callback, called each time it is about to send the
 * request. A second call for one transfer is libcurl retrying on a fresh
 * connection because a kept-alive one closed without an answer: refused for
 * a request with a body, and for one sent with resend = false (see
 * push_transfer). */
static int prereq_cb(void *ud, char *remote_ip, char *local_ip, int remote_port, int local_port) {
  Transfer *t = ud;
  (void)remote_ip;
  (void)local_ip;
  (void)remote_port;
  (void)local_port;
  if (t->attempts++ == 0) return CURL_PREREQFUNC_OK;
  t->resend_refused = 1;
  return CURL_PREREQFUNC_ABORT;
}

/* push_transfer(req at idx, owner at oidx or 0) -> [transfer]: a transfer
 * set up from the request table and added to the engine at eidx. */
static Transfer *push_transfer(lua_State *L, int idx, int eidx, int oidx) {
  Engine *e = lua_touserdata(L, eidx);
  Request r;
  check_request(L, idx, &r);
  Transfer *t = lua_newuserdatauv(L, sizeof *t, 3);
  memset(t, 0, sizeof *t);
  t->engine = e;
  luaL_setmetatable(L, TRANSFER_MT);
  lua_pushvalue(L, eidx);
  lua_setiuservalue(L, -2, 1);
  if (oidx) {
    lua_pushvalue(L, oidx);
    lua_setiuservalue(L, -2, 2);
  }
  t->easy = engine_easy(e);
  if (t->easy == NULL) luaL_error(L, "http: cannot create a transfer");
  CURL *h = t->easy;

  const char *method = r.method ? r.method : "GET", *url = r.url, *body = r.body;
  size_t blen = r.blen;
  size_t mlen = strlen(method), ulen = strlen(url);
  t->what = malloc(mlen + 1 + ulen + 1); /* "METHOD url" */
  if (t->what == NULL) luaL_error(L, "http: out of memory");
  memcpy(t->what, method, mlen);
  t->what[mlen] = ' ';
  memcpy(t->what + mlen + 1, url, ulen + 1);
  if (r.output && (t->output = strdup(r.output)) == NULL) luaL_error(L, "http: out of memory");

  lua_Integer max = r.max_response ? r.max_response : DEFAULT_MAX_RESPONSE;
  t->max_response = (size_t)max;
  must(L, curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)max));
  must(L, curl_easy_setopt(h, CURLOPT_PRIVATE, t));
  must(L, curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->errbuf));
  must(L, curl_easy_setopt(h, CURLOPT_URL, url));
  must(L, curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https"));
  must(L, curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L));
  must(L, curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L));
  must(L, curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L));
  must(L, curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L));
  must(L, curl_easy_setopt(h, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L));
  must(L, curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS));
  must(L, curl_easy_setopt(h, CURLOPT_PIPEWAIT, 1L));
  must(L, curl_easy_setopt(h, CURLOPT_USERAGENT, QUAN_USER_AGENT));
  must(L, curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb));
  must(L, curl_easy_setopt(h, CURLOPT_WRITEDATA, t));
  must(L, curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, header_cb));
  must(L, curl_easy_setopt(h, CURLOPT_HEADERDATA, t));
  must(L, curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ms(r.connect_timeout, DEFAULT_CONNECT_TIMEOUT_MS)));
  must(L, curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ms(r.timeout, 0)));
  if (r.cafile) must(L, curl_easy_setopt(h, CURLOPT_CAINFO, r.cafile));
  if (r.proxy) {
    must(L, curl_easy_setopt(h, CURLOPT_PROXY, r.proxy));
    t->via_proxy = *r.proxy != '\0';
  }

  /* POST, PUT and PATCH always carry a body (Content-Length: 0 when empty);
   * another method only a non-empty one: a bodiless GET may be resent on a
   * fresh connection when a kept-alive one turns out closed (prereq_cb) */
  int with_body = (body != NULL && blen > 0) || strcmp(method, "POST") == 0 ||
                  strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0;
  if (strcmp(method, "HEAD") == 0) {
    must(L, curl_easy_setopt(h, CURLOPT_NOBODY, 1L));
  } else if (with_body) {
    /* Never sent twice: when a kept-alive connection closes without an
     * answer, libcurl would resend the request on a fresh connection —
     * after the server may have acted on it, and with the same signature
     * and nonce. prereq_cb refuses that second attempt; the caller gets
     * "recv" (outcome unknown) and decides. The body is handed over whole
     * (not through a read callback), so a small request goes out as one
     * TLS record and one send. */
    if (blen > 0) { /* the string stays as long as the transfer: no copy */
      rawfield(L, idx, "body");
      lua_setiuservalue(L, -2, 3);
    }
    must(L, curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen));
    must(L, curl_easy_setopt(h, CURLOPT_POSTFIELDS, blen > 0 ? body : ""));
    must(L, curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, prereq_cb));
    must(L, curl_easy_setopt(h, CURLOPT_PREREQDATA, t));
    if (strcmp(method, "POST") != 0) must(L, curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method));
  } else if (strcmp(method, "GET") != 0) {
    must(L, curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method));
  }
  /* resend = false: a bodiless request is not resent either (a signed one
   * would go out again with the same nonce; its sender signs anew) */
  if (!with_body && r.no_resend) {
    must(L, curl_easy_setopt(h, CURLOPT_PREREQFUNCTION, prereq_cb));
    must(L, curl_easy_setopt(h, CURLOPT_PREREQDATA, t));
  }
  set_headers(L, t, idx, with_body);
  must(L, curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers));

  CURLMcode mc = curl_multi_add_handle(e->multi, h);
  if (mc != CURLM_OK) luaL_error(L, "http: %s", curl_multi_strerror(mc));
  t->in_multi = 1;
  t->id = ++e->last_id;
  /* engine.transfers[t] = transfer */
  lua_getiuservalue(L, eidx, 1);
  lua_pushlightuserdata(L, t);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  return t;
}

/* ---- results ---------------------------------------------------------------- */

static const char *code_of(Transfer *t) {
  CURLcode rc = t->result;
  if (t->out_errno) return "io";
  /* through a proxy, the only host curl connects to is the proxy */
  if (rc == CURLE_COULDNT_CONNECT && t->via_proxy) return "proxy";
  switch (rc) {
  case CURLE_OPERATION_TIMEDOUT: return "timeout";
  case CURLE_COULDNT_RESOLVE_HOST: return "dns";
  case CURLE_COULDNT_CONNECT: return "connect";
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_PROXY: return "proxy";
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_ENGINE_NOTFOUND:
  case CURLE_SSL_ENGINE_SETFAILED:
  case CURLE_SSL_ENGINE_INITFAILED:
  case CURLE_SSL_SHUTDOWN_FAILED:
  case CURLE_SSL_CRL_BADFILE:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_INVALIDCERTSTATUS:
  case CURLE_SSL_CLIENTCERT:
  case CURLE_USE_SSL_FAILED: return "tls";
  case CURLE_SEND_ERROR: return "send";
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_WEIRD_SERVER_REPLY:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_BAD_CONTENT_ENCODING: return "recv";
  case CURLE_URL_MALFORMAT:
  case CURLE_UNSUPPORTED_PROTOCOL: return "url";
  case CURLE_ABORTED_BY_CALLBACK: return t->resend_refused ? "recv" : "aborted";
  case CURLE_FILESIZE_EXCEEDED: return "too_large";
  case CURLE_WRITE_ERROR: return t->too_large ? "too_large" : "other";
  default: return "other";
  }
}

/* [] -> [nil, message, code]: a failed transfer as fail values. */
static int push_failure(lua_State *L, Transfer *t) {
  const char *msg = t->errbuf[0] ? t->errbuf : curl_easy_strerror(t->result);
  char big[96];
  if (t->result == CURLE_WRITE_ERROR) msg = "out of memory storing the response";
  /* libcurl 7.88 reports a header line past its 100 KB limit this way too,
   * and a request line and headers past its 1 MB */
  const char *what = t->what ? t->what : "http", *space = strchr(what, ' ');
  size_t wlen = strlen(what), ulen = space ? wlen - (size_t)(space - what) - 1 : wlen;
  const char *code = code_of(t);
  if (t->result == CURLE_OUT_OF_MEMORY) {
    if (ulen > 65536) {
      snprintf(big, sizeof big, "the URL is %zu bytes, more than libcurl sends (1 MB with the headers)", ulen);
      msg = big;
      code = "url";
    } else {
      msg = "out of memory, or an answer header longer than libcurl allows (100 KB)";
    }
  }
  if (t->too_large || t->result == CURLE_FILESIZE_EXCEEDED) {
    snprintf(big, sizeof big, "answer larger than %zu bytes (max_response)", t->max_response);
    msg = big;
  }
  if (t->resend_refused) msg = "connection closed without an answer (the request was not sent again)";
  /* "METHOD url", its first 300 bytes: a message names a request, it does not repeat a huge one */
  char shown[320];
  snprintf(shown, sizeof shown, wlen > 300 ? "%.300s..." : "%s", what);
  if (t->out_errno) return quan_fail(L, "io", "%s: cannot write %s: %s", shown, t->output, strerror(t->out_errno));
  /* "Failed to connect" -> "failed to connect"; "URL ..." stays */
  int c = (unsigned char)msg[0];
  if (c && !isupper((unsigned char)msg[1])) c = tolower(c);
  return quan_fail(L, code, "%s: %c%s", shown, c ? c : '?', c ? msg + 1 : "");
}

/* ascii_lower(c): c with A-Z folded to a-z, whatever the locale (header
 * names are ASCII tokens) */
static char ascii_lower(char c) {
  return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

/* [] -> [s]: s is the lower-case copy of p[0..n). */
static void push_lower(lua_State *L, const char *p, size_t n) {
  char tmp[64];
  if (n <= sizeof tmp) { /* header names: no buffer on the Lua stack */
    for (size_t i = 0; i < n; i++) tmp[i] = ascii_lower(p[i]);
    lua_pushlstring(L, tmp, n);
    return;
  }
  luaL_Buffer b;
  char *d = luaL_buffinitsize(L, &b, n);
  for (size_t i = 0; i < n; i++) d[i] = ascii_lower(p[i]);
  luaL_pushresultsize(&b, n);
}

static const char *skip_ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t')) p++;
  return p;
}

static const char *trim_end(const char *p, const char *end) {
  while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
  return end;
}

/* next_header(&p, end, &name, &nlen) -> [value] and 1 for the next header
 * line of the block p..end (lines each ending in '\0', as header_cb stores
 * them), name and nlen set; 0 at the end. Stray lines are skipped; obsolete
 * folded continuation lines are joined to the value by a space. */
static int next_header(lua_State *L, const char **pp, const char *end, const char **name, size_t *nlen) {
  const char *p = *pp;
  while (p && p < end) {
    const char *line = p, *eol = line + strlen(line);
    p = eol + 1;
    const char *colon = memchr(line, ':', (size_t)(eol - line));
    if (colon == NULL || line[0] == ' ' || line[0] == '\t') continue; /* stray line */
    *name = line;
    *nlen = (size_t)(trim_end(line, colon) - line);
    const char *v = skip_ws(colon + 1, eol);
    if (p < end && (*p == ' ' || *p == '\t')) {
      luaL_Buffer b;
      luaL_buffinit(L, &b);
      luaL_addlstring(&b, v, (size_t)(trim_end(v, eol) - v));
      while (p < end && (*p == ' ' || *p == '\t')) {
        const char *c = p, *ce = c + strlen(c);
        p = ce + 1;
        c = skip_ws(c, ce);
        luaL_addchar(&b, ' ');
        luaL_addlstring(&b, c, (size_t)(trim_end(c, ce) - c));
      }
      luaL_pushresult(&b);
    } else {
      lua_pushlstring(L, v, (size_t)(trim_end(v, eol) - v));
    }
    *pp = p;
    return 1;
  }
  *pp = end;
  return 0;
}

/* [headers] -> [headers]: adds the header lines of the block p..n, keyed
 * by lower-case name, a repeated header's values joined by ", ". */
static void push_headers(lua_State *L, const char *p, size_t n) {
  int h = lua_gettop(L);
  const char *end = p + n, *name;
  size_t nlen;
  while (next_header(L, &p, end, &name, &nlen)) { /* value */
    push_lower(L, name, nlen);                    /* value lname */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, h) == LUA_TSTRING) {        /* value lname old */
      lua_pushliteral(L, ", ");
      lua_pushvalue(L, -4);
      lua_concat(L, 3);                           /* value lname joined */
    } else {
      lua_pop(L, 1);
      lua_pushvalue(L, -2);                       /* value lname value */
    }
    lua_rawset(L, h);                             /* value */
    lua_pop(L, 1);
  }
}

/* response.__index(res, k): res.header_list, made from the header block the
 * response's metatable keeps (at 1) when it is first read, then a plain
 * field; nil for any other key. Most callers read only res.headers: the
 * {name, value} pairs are made for those that ask. */
static int response_index(lua_State *L) {
  size_t n;
  if (lua_type(L, 2) != LUA_TSTRING || strcmp(lua_tostring(L, 2), "header_list") != 0 || !lua_getmetatable(L, 1))
    return 0;
  const char *p = lua_rawgeti(L, 3, 1) == LUA_TSTRING ? lua_tolstring(L, 4, &n) : NULL; /* [res, k, mt, block] */
  const char *end = p ? p + n : NULL, *name;
  size_t nlen;
  lua_Integer count = 0;
  lua_newtable(L);                                /* [..., list] */
  while (p && next_header(L, &p, end, &name, &nlen)) { /* [..., list, value] */
    lua_createtable(L, 2, 0);
    lua_pushlstring(L, name, nlen);
    lua_rawseti(L, -2, 1);
    lua_rotate(L, -2, 1);                         /* [..., list, pair, value] */
    lua_rawseti(L, -2, 2);
    lua_rawseti(L, -2, ++count);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 1);                               /* res.header_list = list */
  return 1;
}

/* [] -> [res]: the response of a finished transfer. */
static void push_response(lua_State *L, Transfer *t) {
  long status = 0;
  curl_off_t total = 0;
  long connects = 0;
  curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_getinfo(t->easy, CURLINFO_TOTAL_TIME_T, &total);
  curl_easy_getinfo(t->easy, CURLINFO_NUM_CONNECTS, &connects);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, status);
  lua_setfield(L, -2, "status");
  lua_createtable(L, 0, t->head_lines); /* sized for the lines: no rehash while filling */
  luaL_setmetatable(L, HEADERS_MT);
  push_headers(L, t->head.p, t->head.len);
  lua_setfield(L, -2, "headers");
  lua_pushlstring(L, t->body.p ? t->body.p : "", t->body.len);
  lua_setfield(L, -2, "body");
  if (t->out_state == 1) { /* the body went to the file */
    lua_pushstring(L, t->output);
    lua_setfield(L, -2, "output");
    lua_pushinteger(L, (lua_Integer)t->out_len);
    lua_setfield(L, -2, "size");
  }
  lua_pushinteger(L, connects);
  lua_setfield(L, -2, "connects");
  lua_pushnumber(L, (lua_Number)total / 1e6);
  lua_setfield(L, -2, "time");
  /* header_list on demand: the block kept in the response's metatable */
  lua_createtable(L, 1, 1);
  lua_pushlstring(L, t->head.p ? t->head.p : "", t->head.len);
  lua_rawseti(L, -2, 1);
  lua_pushcfunction(L, response_index);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}

/* output_finish(t): the output file of a finished transfer closed (an
 * empty one made for a 2xx answer without a body); a failure to write it
 * fails the transfer, and a failed transfer's partial file is removed */
static void output_finish(Transfer *t) {
  if (t->output == NULL) return;
  if (t->out) {
    if (fclose(t->out) != 0 && !t->out_errno) t->out_errno = errno ? errno : EIO;
    t->out = NULL;
  } else if (t->result == CURLE_OK && t->out_state == 0) {
    long status = status_of(t);
    if (status >= 200 && status < 300 && output_open(t)) {
      if (fclose(t->out) != 0) t->out_errno = errno ? errno : EIO;
      t->out = NULL;
    }
  }
  if (t->out_errno && t->result == CURLE_OK) t->result = CURLE_WRITE_ERROR;
  if (t->result != CURLE_OK && t->out_state == 1) unlink(t->output);
}

/* [] -> [res] or [nil, message, code]; returns the count pushed. */
static int push_result(lua_State *L, Transfer *t) {
  output_finish(t);
  if (t->result != CURLE_OK) return push_failure(L, t);
  push_response(L, t);
  return 1;
}

/* headers.__index(h, k): looks up the lower-case form of a string key. */
static int headers_index(lua_State *L) {
  size_t n;
  if (lua_type(L, 2) != LUA_TSTRING) return 0;
  const char *k = lua_tolstring(L, 2, &n);
  push_lower(L, k, n);
  lua_rawget(L, 1);
  return 1;
}

/* ---- engine: completions -------------------------------------------------- */

/* Moves the transfer finished in libcurl into its owner's queue (or leaves it
 * marked done for a synchronous caller). Engine at eidx. */
static void engine_finish(lua_State *L, int eidx, Transfer *t) {
  Engine *e = lua_touserdata(L, eidx);
  if (t->in_multi) {
    curl_multi_remove_handle(e->multi, t->easy);
    t->in_multi = 0;
  }
  lua_getiuservalue(L, eidx, 1);          /* transfers */
  lua_pushlightuserdata(L, t);
  if (lua_rawget(L, -2) != LUA_TUSERDATA) { /* transfers tu */
    lua_pop(L, 2);
    return;
  }
  lua_pushlightuserdata(L, t);
  lua_pushnil(L);
  lua_rawset(L, -4);                      /* transfers[t] = nil */
  if (lua_getiuservalue(L, -1, 2) == LUA_TUSERDATA) { /* transfers tu owner */
    Multi *m = lua_touserdata(L, -1);
    m->pending--;
    lua_getiuservalue(L, -1, 3);          /* ... owner inflight */
    lua_pushnil(L);
    lua_rawseti(L, -2, t->id);
    lua_pop(L, 1);
    lua_getiuservalue(L, -1, 2);          /* ... owner queue */
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, t->id);
    lua_setfield(L, -2, "id");
    if (push_result(L, t) == 1) {
      lua_setfield(L, -2, "res");
    } else {
      lua_setfield(L, -4, "code");        /* code into the entry... */
      lua_setfield(L, -3, "err");
      lua_pop(L, 1);
    }
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pop(L, 1);
    transfer_release(t);
  }
  lua_pop(L, 3);
}

/* Reads libcurl's finished transfers. Engine at eidx. */
static void engine_process(lua_State *L, int eidx) {
  Engine *e = lua_touserdata(L, eidx);
  CURLMsg *msg;
  int left;
  if (e->oom) {
    e->oom = 0;
    luaL_error(L, "http: out of memory");
  }
  while ((msg = curl_multi_info_read(e->multi, &left))) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer *t = NULL;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
    t->done = 1;
    t->result = msg->data.result;
    engine_finish(L, eidx, t);
  }
}

static void engine_release(Engine *e) {
  while (e->npool > 0) curl_easy_cleanup(e->pool[--e->npool]);
  if (e->multi) curl_multi_cleanup(e->multi);
  e->multi = NULL;
  /* refused (and kept) while an easy handle still uses it */
  if (e->share && curl_share_cleanup(e->share) == CURLSHE_OK) e->share = NULL;
  free(e->fds);
  free(e->ready);
  e->fds = e->ready = NULL;
  e->nfds = e->capfds = 0;
}

/* engine.__gc: detaches every transfer still inside, then frees the CURLM. */
static int engine_gc(lua_State *L) {
  Engine *e = luaL_checkudata(L, 1, ENGINE_MT);
  if (e->multi == NULL) return 0;
  if (lua_getiuservalue(L, 1, 1) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      Transfer *t = lua_touserdata(L, -1);
      if (t) transfer_release(t);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
  engine_release(e);
  return 0;
}

/* [] -> [engine] */
static Engine *push_engine(lua_State *L) {
  Engine *e = lua_newuserdatauv(L, sizeof *e, 1);
  memset(e, 0, sizeof *e);
  e->deadline = -1;
  luaL_setmetatable(L, ENGINE_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1);
  e->multi = curl_multi_init();
  if (e->multi == NULL) luaL_error(L, "http: cannot create a multi handle");
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
  curl_multi_setopt(e->multi, CURLMOPT_SOCKETDATA, e);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
  curl_multi_setopt(e->multi, CURLMOPT_TIMERDATA, e);
  curl_multi_setopt(e->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  /* libcurl's default keeps 4 idle connections per easy handle inside the
   * multi: after a burst of parallel requests, sequential use would close
   * all but 4, and the next burst pays a TLS handshake per connection */
  curl_multi_setopt(e->multi, CURLMOPT_MAXCONNECTS, MAX_CONNECTS);
  /* TLS sessions are per easy handle unless shared: a new connection to a
   * known host resumes a session instead of a full handshake */
  e->share = curl_share_init();
  if (e->share) curl_share_setopt(e->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
  return e;
}

/* ---- http.request ------------------------------------------------------------ */

/* request(req) -> res | nil, message, code
 * Synchronous. Drives the state's engine (other transfers progress too)
 * until this one is done. An interrupting signal that sets a Lua hook on the
 * main thread (the host's SIGINT) aborts the transfer, so the hook can fire
 * on return, also when L is a coroutine. */
static int http_request(lua_State *L) {
  int eidx = lua_upvalueindex(1);
  Engine *e = lua_touserdata(L, eidx);
  luaL_checktype(L, 1, LUA_TTABLE);
  Transfer *t = push_transfer(L, 1, eidx, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  lua_State *main = lua_tothread(L, -1); /* kept alive by the registry */
  lua_pop(L, 1);
  lua_Hook hook0 = lua_gethook(main);
  while (!t->done) {
    int intr = engine_step(e, -1);
    int err = errno;
    engine_process(L, eidx);
    if (intr < 0 && !t->done) {
      engine_finish(L, eidx, t); /* the engine forgets it */
      quan_fail(L, "other", "%s: poll: %s", t->what, strerror(err));
      transfer_release(t);
      return 3;
    }
    if (intr > 0 && !t->done && lua_gethook(main) != hook0) {
      engine_finish(L, eidx, t); /* the engine forgets it */
      quan_fail(L, "aborted", "%s: interrupted", t->what);
      transfer_release(t);
      return 3;
    }
  }
  int n = push_result(L, t);
  transfer_release(t);
  return n;
}

/* ---- http.multi ---------------------------------------------------------- */

static Multi *check_multi(lua_State *L) {
  Multi *m = luaL_checkudata(L, 1, MULTI_MT);
  if (m->closed) luaL_error(L, "http multi: used after close");
  return m;
}

/* multi() -> m */
static int http_multi(lua_State *L) {
  Multi *m = lua_newuserdatauv(L, sizeof *m, 3);
  m->engine = lua_touserdata(L, lua_upvalueindex(1));
  m->pending = 0;
  m->closed = 0;
  luaL_setmetatable(L, MULTI_MT);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_setiuservalue(L, -2, 1);
  lua_createtable(L, 1, 0); /* the usual completion fits */
  lua_setiuservalue(L, -2, 2);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 3);
  return 1;
}

/* m:add(req) -> id */
static int multi_add(lua_State *L) {
  Multi *m = check_multi(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getiuservalue(L, 1, 1); /* engine at 3 */
  Transfer *t = push_transfer(L, 2, 3, 1);
  lua_getiuservalue(L, 1, 3);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, t->id); /* inflight[id] = transfer */
  m->pending++;
  lua_pushinteger(L, t->id);
  return 1;
}

/* m:perform([max_wait]) -> completions
 * Waits until a completion is ready, max_wait seconds have passed (no limit
 * when nil), or a signal interrupts; returns the completions made so far. */
static int multi_perform(lua_State *L) {
  Multi *m = check_multi(L);
  lua_Number w = luaL_optnumber(L, 2, -1);
  luaL_argcheck(L, lua_isnoneornil(L, 2) || w >= 0, 2, "negative wait");
  lua_settop(L, 1);
  lua_getiuservalue(L, 1, 1); /* engine at 2 */
  lua_getiuservalue(L, 1, 2); /* queue at 3 */
  long long deadline = w < 0 ? -1 : now_ms() + (long long)(w * 1000);
  for (;;) {
    if (lua_rawlen(L, 3) > 0 || m->pending == 0) break;
    long long left = deadline < 0 ? -1 : deadline - now_ms();
    int intr = engine_step(m->engine, left < 0 && deadline >= 0 ? 0 : left);
    int err = errno;
    engine_process(L, 2);
    if (intr < 0) return luaL_error(L, "http multi: perform: poll: %s", strerror(err));
    if (intr) break;
    if (deadline >= 0 && now_ms() >= deadline) {
      if (lua_rawlen(L, 3) == 0) { /* one last look without waiting */
        engine_step(m->engine, 0);
        engine_process(L, 2);
      }
      break;
    }
  }
  lua_createtable(L, 1, 0);
  lua_setiuservalue(L, 1, 2);
  return 1; /* the old queue */
}

/* m:pending() -> number of transfers in flight */
static int multi_pending(lua_State *L) {
  lua_pushinteger(L, check_multi(L)->pending);
  return 1;
}

/* m:cancel(id) -> true when the transfer was in flight (it is aborted, its
 * connection closed, and it will never complete), false otherwise. */
static int multi_cancel(lua_State *L) {
  Multi *m = check_multi(L);
  lua_Integer id = luaL_checkinteger(L, 2);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 3);             /* [m, id, inflight] */
  if (lua_rawgeti(L, 3, id) != LUA_TUSERDATA) { /* [m, id, inflight, t] */
    lua_pushboolean(L, 0);
    return 1;
  }
  Transfer *t = lua_touserdata(L, 4);
  lua_pushnil(L);
  lua_rawseti(L, 3, id);                  /* inflight[id] = nil */
  lua_getiuservalue(L, 1, 1);             /* [m, id, inflight, t, engine] */
  lua_getiuservalue(L, 5, 1);             /* [..., engine, transfers] */
  lua_pushlightuserdata(L, t);
  lua_pushnil(L);
  lua_rawset(L, 6);                       /* transfers[t] = nil */
  transfer_release(t);
  m->pending--;
  lua_pushboolean(L, 1);
  return 1;
}

/* close, __close and __gc: aborts what is in flight; idempotent. */
static int multi_close(lua_State *L) {
  Multi *m = luaL_checkudata(L, 1, MULTI_MT);
  if (m->closed) return 0;
  m->closed = 1;
  lua_getiuservalue(L, 1, 1); /* engine */
  lua_getiuservalue(L, -1, 1); /* engine transfers */
  lua_getiuservalue(L, 1, 3); /* inflight */
  if (lua_istable(L, -1) && lua_istable(L, -2)) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      Transfer *t = lua_touserdata(L, -1);
      lua_pushlightuserdata(L, t);
      lua_pushnil(L);
      lua_rawset(L, -6); /* engine transfers[t] = nil */
      transfer_release(t);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 3);
  m->pending = 0;
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 2);
  lua_pushnil(L);
  lua_setiuservalue(L, 1, 3);
  return 0;
}

static int multi_tostring(lua_State *L) {
  Multi *m = luaL_checkudata(L, 1, MULTI_MT);
  if (m->closed) lua_pushliteral(L, "quan.http.multi (closed)");
  else lua_pushfstring(L, "quan.http.multi (%d pending)", m->pending);
  return 1;
}

static const luaL_Reg multi_methods[] = {
  {"add", multi_add},
  {"perform", multi_perform},
  {"pending", multi_pending},
  {"cancel", multi_cancel},
  {"close", multi_close},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"request", http_request},
  {"multi", http_multi},
  {NULL, NULL}
};

int luaopen_quan_http(lua_State *L) {
  /* reference-counted and thread-safe since libcurl 7.84 */
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) luaL_error(L, "http: cannot initialize libcurl");
  if (luaL_newmetatable(L, TRANSFER_MT)) {
    lua_pushcfunction(L, transfer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, ENGINE_MT)) {
    lua_pushcfunction(L, engine_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, HEADERS_MT)) {
    lua_pushcfunction(L, headers_index);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, MULTI_MT)) {
    luaL_newlib(L, multi_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, multi_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, multi_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, multi_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newlibtable(L, funcs);
  push_engine(L);
  luaL_setfuncs(L, funcs, 1);
  lua_pushliteral(L, QUAN_USER_AGENT);
  lua_setfield(L, -2, "USER_AGENT");
  return 1;
}
