/* lserver.c: quan.server, HTTPS on loopback with libmicrohttpd (GnuTLS).
 *
 * One thread per connection (MHD_USE_THREAD_PER_CONNECTION), so a slow
 * handler only blocks its own connection. Each connection thread lazily makes
 * its own lua_State with quan_newstate(), requires the handler module named at
 * start and calls handler(req) -> status, headers, body. A state belongs to
 * exactly one thread and is closed when that thread ends (pthread key
 * destructor). The Lua state that called start() never runs handlers; it
 * waits in server:wait() and stops the daemon. See docs/sandbox.md. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>
#include "quan.h"

#define SERVER_MT "quan.server"

/* Shared by every thread of one daemon; lives in C memory until stop so the
 * connection threads never see a collected userdata. */
typedef struct Shared {
  char *module;      /* handler module name */
  char *arg;         /* string handed to module.new(arg), may be NULL */
  size_t max_body;   /* larger request bodies get 413 */
  pthread_key_t key; /* per-thread ThreadState */
  /* Handler states of ended connections kept for the next ones (start's
   * `reuse` option): making a state (libraries, embedded modules, the
   * handler's new()) costs more than several requests. One thread uses a
   * state at a time; the pool hands it over under the mutex. */
  pthread_mutex_t pool_lock;
  lua_State **pool;
  int npool, maxpool;
} Shared;

typedef struct ThreadState {
  lua_State *L;
  Shared *sh;
} ThreadState;

/* One request: created by the URI logger, freed when MHD completes it. */
typedef struct Request {
  char *target;   /* raw request target, path and query as on the wire */
  char *body;
  size_t len, cap;
  int started;    /* the access handler has seen the headers */
  int too_big;
} Request;

typedef struct Server {
  struct MHD_Daemon *daemon;
  Shared *shared;
  char *cert, *key; /* PEM, kept until stop (MHD reads them) */
  size_t keylen;
  int port;
} Server;

/* Signals end server:wait(). A signal handler can only reach a global; this
 * is the one C global of the module. */
static volatile sig_atomic_t got_signal = 0;

static void on_signal(int sig) { got_signal = sig; }

/* ---- per-thread Lua states ---------------------------------------------- */

/* pthread key destructor, at the end of a connection thread: the state goes
 * back to the pool when there is room, else it is closed. */
static void thread_state_free(void *p) {
  ThreadState *ts = p;
  if (ts == NULL) return;
  if (ts->L) {
    Shared *sh = ts->sh;
    int kept = 0;
    if (sh->maxpool > 0) {
      pthread_mutex_lock(&sh->pool_lock);
      if (sh->npool < sh->maxpool) {
        lua_settop(ts->L, 0);
        sh->pool[sh->npool++] = ts->L;
        kept = 1;
      }
      pthread_mutex_unlock(&sh->pool_lock);
    }
    if (!kept) lua_close(ts->L);
  }
  free(ts);
}

static int msgh(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* [-0, +0] in the new state: h = require(module); if h is a table, h =
 * h.new(arg); keeps h (a function) in the registry. */
static int load_handler(lua_State *L) {
  Shared *sh = lua_touserdata(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, sh->module);
  lua_call(L, 1, 1);
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "new");
    if (!lua_isfunction(L, -1)) return luaL_error(L, "server: module '%s' has no new(arg)", sh->module);
    if (sh->arg) lua_pushstring(L, sh->arg);
    else lua_pushnil(L);
    lua_call(L, 1, 1);
  }
  if (!lua_isfunction(L, -1)) return luaL_error(L, "server: module '%s' gave no handler function", sh->module);
  lua_setfield(L, LUA_REGISTRYINDEX, "quan.server.handler");
  return 0;
}

/* The state of the calling thread, made on first use. NULL when the handler
 * could not be loaded (the error went to stderr). */
static ThreadState *thread_state(Shared *sh) {
  ThreadState *ts = pthread_getspecific(sh->key);
  if (ts) return ts->L ? ts : NULL;
  ts = calloc(1, sizeof *ts);
  if (ts == NULL) return NULL;
  ts->sh = sh;
  pthread_setspecific(sh->key, ts);
  if (sh->maxpool > 0) {
    pthread_mutex_lock(&sh->pool_lock);
    if (sh->npool > 0) ts->L = sh->pool[--sh->npool];
    pthread_mutex_unlock(&sh->pool_lock);
    if (ts->L) return ts;
  }
  lua_State *L = quan_newstate();
  if (L == NULL) return NULL;
  lua_gc(L, LUA_GCGEN, 0, 0); /* requests make short-lived garbage */
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, load_handler);
  lua_pushlightuserdata(L, sh);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    fprintf(stderr, "quan server: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return NULL;
  }
  lua_settop(L, 0);
  ts->L = L;
  return ts;
}

/* ---- MHD callbacks ------------------------------------------------------- */

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  (void)cls;
  (void)c;
  Request *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->target = strdup(uri ? uri : "/");
  return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)cls;
  (void)c;
  (void)toe;
  Request *r = *con_cls;
  if (r == NULL) return;
  free(r->target);
  free(r->body);
  free(r);
  *con_cls = NULL;
}

/* header iterator: adds lower-cased name = value to the table on top, joining
 * repeated names with ", " */
static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  lua_State *L = cls;
  char name[256];
  size_t n = strlen(key);
  if (n >= sizeof name) return MHD_YES;
  for (size_t i = 0; i <= n; i++) name[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
  if (lua_getfield(L, -1, name) == LUA_TSTRING) {
    lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), value ? value : "");
    lua_setfield(L, -3, name);
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lua_pushstring(L, value ? value : "");
    lua_setfield(L, -2, name);
  }
  return MHD_YES;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *ctype,
                              const char *body, size_t len) {
  struct MHD_Response *res = MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (res == NULL) return MHD_NO;
  if (ctype) MHD_add_response_header(res, "Content-Type", ctype);
  enum MHD_Result ret = MHD_queue_response(c, status, res);
  MHD_destroy_response(res);
  return ret;
}

static enum MHD_Result system_error(struct MHD_Connection *c) {
  static const char body[] = "{\"code\":\"SYSTEM_ERROR\",\"message\":\"sandbox handler failed\"}";
  return answer(c, 500, "application/json", body, sizeof body - 1);
}

/* Adds the handler's headers (map name -> value, or array of "Name: value")
 * at index hi to res. */
static void add_response_headers(lua_State *L, int hi, struct MHD_Response *res) {
  if (!lua_istable(L, hi)) return;
  lua_pushnil(L);
  while (lua_next(L, hi)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TSTRING) {
      MHD_add_response_header(res, lua_tostring(L, -2), lua_tostring(L, -1));
    } else if (lua_type(L, -2) == LUA_TNUMBER && lua_type(L, -1) == LUA_TSTRING) {
      const char *line = lua_tostring(L, -1);
      const char *colon = strchr(line, ':');
      if (colon && colon - line < 256) {
        char name[256];
        memcpy(name, line, (size_t)(colon - line));
        name[colon - line] = 0;
        const char *v = colon + 1;
        while (*v == ' ') v++;
        MHD_add_response_header(res, name, v);
      }
    }
    lua_pop(L, 1);
  }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  (void)version;
  Shared *sh = cls;
  Request *r = *con_cls;
  if (r == NULL || r->target == NULL) return MHD_NO; /* out of memory in on_uri */
  if (!r->started) {
    r->started = 1;
    return MHD_YES;
  }
  if (*upload_size > 0) {
    size_t n = *upload_size;
    *upload_size = 0;
    if (r->too_big || r->len + n > sh->max_body) {
      r->too_big = 1;
      return MHD_YES;
    }
    if (r->len + n > r->cap) {
      size_t cap = r->cap ? r->cap : 4096;
      while (cap < r->len + n) cap *= 2;
      char *b = realloc(r->body, cap);
      if (b == NULL) return MHD_NO;
      r->body = b;
      r->cap = cap;
    }
    memcpy(r->body + r->len, upload, n);
    r->len += n;
    return MHD_YES;
  }
  if (r->too_big) {
    static const char body[] = "{\"code\":\"PARAM_ERROR\",\"message\":\"request body too large\"}";
    return answer(c, 413, "application/json", body, sizeof body - 1);
  }
  ThreadState *ts = thread_state(sh);
  if (ts == NULL) return system_error(c);
  lua_State *L = ts->L;
  lua_settop(L, 0);
  lua_pushcfunction(L, msgh);
  lua_getfield(L, LUA_REGISTRYINDEX, "quan.server.handler");
  lua_createtable(L, 0, 6); /* req */
  lua_pushstring(L, method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, r->target);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, url);
  lua_setfield(L, -2, "url");
  lua_pushlstring(L, r->body ? r->body : "", r->len);
  lua_setfield(L, -2, "body");
  lua_newtable(L);
  MHD_get_connection_values(c, MHD_HEADER_KIND, add_header, L);
  lua_setfield(L, -2, "headers");
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ci->client_addr;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    lua_pushfstring(L, "%s:%d", ip, (int)ntohs(sin->sin_port));
    lua_setfield(L, -2, "remote");
  }
  if (lua_pcall(L, 1, 3, 1) != LUA_OK) {
    fprintf(stderr, "quan server: %s\n", lua_tostring(L, -1));
    lua_settop(L, 0);
    return system_error(c);
  }
  /* stack: msgh, status, headers, body */
  if ((lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "drop") == 0) ||
      (lua_isinteger(L, 2) && lua_tointeger(L, 2) == 0)) {
    lua_settop(L, 0);
    return MHD_NO; /* close without an answer */
  }
  lua_Integer status = lua_isinteger(L, 2) ? lua_tointeger(L, 2) : 0;
  if (status < 100 || status > 999) {
    fprintf(stderr, "quan server: handler returned no status\n");
    lua_settop(L, 0);
    return system_error(c);
  }
  size_t blen = 0;
  const char *body = lua_isstring(L, 4) ? lua_tolstring(L, 4, &blen) : "";
  struct MHD_Response *res = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (res == NULL) {
    lua_settop(L, 0);
    return MHD_NO;
  }
  add_response_headers(L, 3, res);
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, res);
  MHD_destroy_response(res);
  lua_settop(L, 0);
  return ret;
}

/* ---- the Lua API --------------------------------------------------------- */

/* Called once every connection thread has ended (after MHD_stop_daemon). */
static void shared_free(Shared *sh) {
  if (sh == NULL) return;
  if (sh->pool) {
    for (int i = 0; i < sh->npool; i++) lua_close(sh->pool[i]);
    free(sh->pool);
    pthread_mutex_destroy(&sh->pool_lock);
  }
  free(sh->module);
  free(sh->arg);
  free(sh);
}

static void server_release(Server *s) {
  if (s->daemon) {
    MHD_stop_daemon(s->daemon); /* joins every connection thread */
    s->daemon = NULL;
    pthread_key_delete(s->shared->key);
  }
  if (s->shared) {
    shared_free(s->shared);
    s->shared = NULL;
  }
  free(s->cert);
  s->cert = NULL;
  if (s->key) {
    volatile char *p = s->key;
    for (size_t i = 0; i < s->keylen; i++) p[i] = 0;
    free(s->key);
    s->key = NULL;
  }
}

static Server *checkserver(lua_State *L) {
  Server *s = luaL_checkudata(L, 1, SERVER_MT);
  if (s->daemon == NULL) luaL_error(L, "server: stopped");
  return s;
}

/* Reads PEM given as text or as "file://path" into fresh C memory; NULL and
 * a message on the stack on failure. */
static char *load_pem(lua_State *L, const char *src, size_t *len, const char *what) {
  if (strncmp(src, "file://", 7) != 0) {
    *len = strlen(src);
    char *p = malloc(*len + 1);
    if (p) memcpy(p, src, *len + 1);
    return p;
  }
  FILE *f = fopen(src + 7, "rb");
  if (f == NULL) {
    lua_pushfstring(L, "server: %s %s: %s", what, src + 7, strerror(errno));
    return NULL;
  }
  size_t cap = 4096, n = 0;
  char *p = malloc(cap);
  while (p) {
    size_t got = fread(p + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
    if (cap - n - 1 == 0) {
      char *q = realloc(p, cap * 2);
      if (q == NULL) {
        free(p);
        p = NULL;
        break;
      }
      p = q;
      cap *= 2;
    }
  }
  fclose(f);
  if (p == NULL) {
    lua_pushfstring(L, "server: %s: out of memory", what);
    return NULL;
  }
  p[n] = 0;
  *len = n;
  return p;
}

static const char *optstring(lua_State *L, const char *field, const char *def) {
  lua_getfield(L, 1, field);
  const char *v = lua_isnil(L, -1) ? def : luaL_checkstring(L, -1);
  lua_pop(L, 1); /* the table still anchors the string */
  return v;
}

static lua_Integer optint(lua_State *L, const char *field, lua_Integer def) {
  lua_getfield(L, 1, field);
  lua_Integer v = lua_isnil(L, -1) ? def : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* start{handler = "module", arg = string, host = "127.0.0.1", port = 0,
 *       cert = pem | "file://...", key = pem | "file://...", timeout = 60,
 *       max_body = 8 MiB, reuse = 0}
 * reuse = n keeps up to n handler states of ended connections for new ones
 * (0: every connection starts from a fresh state).
 *   -> server | nil, message, code ("bind", "tls", "memory") */
static int l_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *module = optstring(L, "handler", NULL);
  luaL_argcheck(L, module != NULL, 1, "handler (a module name) is required");
  const char *arg = optstring(L, "arg", NULL);
  const char *host = optstring(L, "host", "127.0.0.1");
  lua_Integer port = optint(L, "port", 0);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port out of range");
  const char *cert = optstring(L, "cert", NULL);
  const char *key = optstring(L, "key", NULL);
  luaL_argcheck(L, (cert == NULL) == (key == NULL), 1, "cert and key go together");
  lua_Integer timeout = optint(L, "timeout", 60);
  lua_Integer max_body = optint(L, "max_body", 8 << 20);
  luaL_argcheck(L, timeout >= 0 && max_body > 0, 1, "timeout and max_body must be positive");
  lua_Integer reuse = optint(L, "reuse", 0);
  luaL_argcheck(L, reuse >= 0 && reuse <= 4096, 1, "reuse must be between 0 and 4096");
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  luaL_argcheck(L, inet_pton(AF_INET, host, &sin.sin_addr) == 1, 1, "host must be an IPv4 address");

  Server *s = lua_newuserdatauv(L, sizeof(Server), 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SERVER_MT);
  s->shared = calloc(1, sizeof(Shared));
  if (s->shared == NULL) goto nomem;
  s->shared->module = strdup(module);
  s->shared->arg = arg ? strdup(arg) : NULL;
  s->shared->max_body = (size_t)max_body;
  if (s->shared->module == NULL || (arg && s->shared->arg == NULL)) goto nomem;
  if (reuse > 0) {
    s->shared->pool = calloc((size_t)reuse, sizeof(lua_State *));
    if (s->shared->pool == NULL) goto nomem;
    pthread_mutex_init(&s->shared->pool_lock, NULL);
    s->shared->maxpool = (int)reuse;
  }
  unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD;
  if (cert) {
    size_t clen;
    s->cert = load_pem(L, cert, &clen, "cert");
    if (s->cert == NULL) goto fail_msg;
    s->key = load_pem(L, key, &s->keylen, "key");
    if (s->key == NULL) goto fail_msg;
    flags |= MHD_USE_TLS;
  }
  if (pthread_key_create(&s->shared->key, thread_state_free) != 0) goto nomem;
  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  if (cert) {
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s->shared,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
                                 MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout,
                                 MHD_OPTION_HTTPS_MEM_CERT, s->cert,
                                 MHD_OPTION_HTTPS_MEM_KEY, s->key,
                                 MHD_OPTION_END);
  } else {
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s->shared,
                                 MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
                                 MHD_OPTION_URI_LOG_CALLBACK, on_uri, NULL,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)timeout,
                                 MHD_OPTION_END);
  }
  if (s->daemon == NULL) {
    int e = errno;
    pthread_key_delete(s->shared->key);
    server_release(s);
    if (e == EADDRINUSE || e == EACCES || e == EADDRNOTAVAIL)
      return quan_fail(L, "bind", "server: cannot listen on %s:%d: %s", host, (int)port, strerror(e));
    return quan_fail(L, cert ? "tls" : "bind", "server: cannot start on %s:%d (bad certificate or key, or %s)",
                     host, (int)port, strerror(e));
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
  s->port = di ? (int)di->port : (int)port;
  return 1;

fail_msg: /* load_pem pushed the message */
  server_release(s);
  return quan_fail(L, "tls", "%s", lua_tostring(L, -1));
nomem:
  server_release(s);
  return quan_fail(L, "memory", "server: out of memory");
}

/* server:port() -> the bound port */
static int server_port(lua_State *L) {
  Server *s = checkserver(L);
  lua_pushinteger(L, s->port);
  return 1;
}

static double since(const struct timespec *t0) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* server:wait([{parent = pid, timeout = seconds, tick = fn, every = seconds}])
 *   -> reason, detail
 * Blocks until SIGINT or SIGTERM ("signal", "INT"|"TERM"), until the parent
 * process is no longer `parent` ("parent"), or until timeout ("timeout").
 * Meanwhile tick() is called every `every` seconds (default 0.1), with the
 * signals still caught; an error in it ends the wait and is raised. The
 * previous signal dispositions are restored before returning. */
static int server_wait(lua_State *L) {
  checkserver(L);
  lua_Integer parent = 0;
  double timeout = -1, every = 0.1;
  int tick = 0; /* stack index of tick, 0 for none */
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "parent");
    parent = luaL_optinteger(L, -1, 0);
    lua_getfield(L, 2, "timeout");
    timeout = luaL_optnumber(L, -1, -1);
    lua_getfield(L, 2, "every");
    every = luaL_optnumber(L, -1, 0.1);
    lua_pop(L, 3);
    lua_getfield(L, 2, "tick");
    if (lua_isnil(L, -1)) lua_pop(L, 1);
    else {
      luaL_checktype(L, -1, LUA_TFUNCTION);
      tick = lua_gettop(L);
    }
  }
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  got_signal = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  struct timespec start, last, nap = {0, 50 * 1000 * 1000};
  clock_gettime(CLOCK_MONOTONIC, &start);
  last = start;
  const char *reason = NULL;
  int failed = 0;
  for (;;) {
    if (got_signal) {
      reason = "signal";
      break;
    }
    if (parent > 0 && getppid() != (pid_t)parent) {
      reason = "parent";
      break;
    }
    if (timeout >= 0 && since(&start) >= timeout) {
      reason = "timeout";
      break;
    }
    if (tick && since(&last) >= every) {
      clock_gettime(CLOCK_MONOTONIC, &last);
      lua_pushvalue(L, tick);
      if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        failed = 1;
        break;
      }
    }
    nanosleep(&nap, NULL);
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  if (failed) {
    got_signal = 0;
    return lua_error(L);
  }
  lua_pushstring(L, reason);
  if (got_signal == SIGINT) lua_pushstring(L, "INT");
  else if (got_signal == SIGTERM) lua_pushstring(L, "TERM");
  else lua_pushnil(L);
  got_signal = 0;
  return 2;
}

/* server:stop(); also __gc and __close. Waits for running handlers, closes
 * every connection and its Lua state. Idempotent. */
static int server_stop(lua_State *L) {
  Server *s = luaL_checkudata(L, 1, SERVER_MT);
  server_release(s);
  return 0;
}

static int server_tostring(lua_State *L) {
  Server *s = luaL_checkudata(L, 1, SERVER_MT);
  if (s->daemon) lua_pushfstring(L, "quan.server (port %d)", s->port);
  else lua_pushstring(L, "quan.server (stopped)");
  return 1;
}

static const luaL_Reg server_methods[] = {
  {"port", server_port},
  {"wait", server_wait},
  {"stop", server_stop},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"start", l_start},
  {NULL, NULL}
};

int luaopen_quan_server(lua_State *L) {
  luaL_newmetatable(L, SERVER_MT);
  lua_newtable(L);
  luaL_setfuncs(L, server_methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, server_stop);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, server_stop);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, server_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
