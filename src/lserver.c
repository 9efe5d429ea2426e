/* lserver.c: quan.server, HTTP(S) on loopback with libmicrohttpd (GnuTLS).
 *
 * The connection model (docs/sandbox.md, "quan.server"):
 * - one event-loop thread (libmicrohttpd's internal epoll thread; `threads`
 *   of them, each with its own share of the connections, on request)
 *   accepts the connections and does all reading, writing and TLS;
 * - a request, once whole, goes to a bounded pool of worker threads and its
 *   connection is suspended until a worker has the answer. Each worker has
 *   its own lua_State, made on first use with quan_newstate() and the
 *   handler module, and kept until stop: what handlers hold (databases, key
 *   files, memory) is bounded by the workers, not by the connections;
 * - a watchdog thread closes a connection that stays idle past
 *   idle_timeout, or whose request takes longer than request_timeout (to
 *   1.5 times that, at random) to arrive (slowloris);
 * - past max_connections a new connection is closed as soon as it is
 *   accepted; the others go on.
 * A connection stays on the event-loop thread that accepted it, so the
 * callbacks of one connection never run at once; what the threads share
 * (the connection list, the pool) is under Shared's two locks.
 * The Lua state that called start() never runs handlers; it waits in
 * server:wait() (running its tick there) and stops the server. */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <microhttpd.h>
#include "quan.h"
#include "sonames.h"

/* libmicrohttpd, opened when this module is first required (quan_library_open,
 * src/quan.h): each name below goes through the address found there. */
#define MICROHTTPD_SYMBOLS_(X) X(MHD_add_response_header) X(MHD_create_response_from_buffer) \
  X(MHD_destroy_response) X(MHD_get_connection_info) X(MHD_get_connection_values) \
  X(MHD_get_daemon_info) X(MHD_queue_response) X(MHD_quiesce_daemon) X(MHD_resume_connection) \
  X(MHD_start_daemon) X(MHD_stop_daemon) X(MHD_suspend_connection)
QUAN_LIBRARY(microhttpd_library, QUAN_SONAME_MICROHTTPD, MICROHTTPD_SYMBOLS_)
#define MHD_add_response_header (*MHD_add_response_header_)
#define MHD_create_response_from_buffer (*MHD_create_response_from_buffer_)
#define MHD_destroy_response (*MHD_destroy_response_)
#define MHD_get_connection_info (*MHD_get_connection_info_)
#define MHD_get_connection_values (*MHD_get_connection_values_)
#define MHD_get_daemon_info (*MHD_get_daemon_info_)
#define MHD_queue_response (*MHD_queue_response_)
#define MHD_quiesce_daemon (*MHD_quiesce_daemon_)
#define MHD_resume_connection (*MHD_resume_connection_)
#define MHD_start_daemon (*MHD_start_daemon_)
#define MHD_stop_daemon (*MHD_stop_daemon_)
#define MHD_suspend_connection (*MHD_suspend_connection_)

#define SERVER_MT "quan.server"
#define HANDLER_KEY "quan.server.handler"

/* TLS 1.2 and 1.3 only, as WeChat Pay's API; GnuTLS's NORMAL otherwise. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* Descriptors counted besides the connections: per worker (a handler's
 * SQLite database, its journal and shared memory, a key or log file) and for
 * the rest of the process (listening socket, epoll, the event loop's wakeup
 * pipe, stdio, the main thread's own files). */
#define FDS_PER_WORKER 8
#define FDS_PER_THREAD 4 /* an event-loop thread: its epoll and wakeup descriptors */
#define FDS_RESERVED 64
#define DEFAULT_MAX_CONNECTIONS 4096
#define WATCHDOG_PERIOD 0.25 /* seconds between the watchdog's rounds */

/* Signals end server:wait(). A signal handler can only reach a global; this
 * is the one C global of the module. */
static volatile sig_atomic_t got_signal = 0;

static void on_signal(int sig) { got_signal = sig; }

static double now_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* ---- types ---------------------------------------------------------------- */

typedef struct Buffer {
  char *data;
  size_t len, cap;
} Buffer;

/* Where a connection is, for the watchdog. */
enum {
  PHASE_IDLE,    /* no request under way: since accept or the last answer */
  PHASE_REQUEST, /* request line received, the request not yet whole */
  PHASE_HANDLER  /* with a worker, or its answer being sent */
};

/* One TCP connection, from accept to close (libmicrohttpd's socket
 * context). Linked in Shared.conns; every field under Shared.conn_lock. */
typedef struct Conn {
  struct Conn *prev, *next;
  int fd;
  int phase;
  double since;      /* when the phase began */
  double allowed;    /* seconds the watchdog allows in this phase */
  int shut;          /* shut down: by the watchdog, or refused */
  int refused;       /* past max_connections: not counted */
  struct Job *job;   /* the request under way, freed at close if
                        libmicrohttpd never completes it */
} Conn;

/* The answer a worker leaves in a Job before resuming its connection. */
enum { ANSWER_NONE, ANSWER_RESPONSE, ANSWER_DROP };

/* One request (libmicrohttpd's con_cls): made when its request line
 * arrives, freed when libmicrohttpd completes it or closes the connection.
 * The event-loop thread fills it; while the connection is suspended a
 * worker owns it, until it calls MHD_resume_connection. */
typedef struct Job {
  struct Job *next; /* in the pool's queue */
  struct MHD_Connection *connection;
  Conn *conn;
  char *target;     /* raw request target, path and query as on the wire */
  char *method, *url;
  Buffer headers;   /* "name\0value\0" pairs, names lower-cased */
  Buffer body;
  char remote[INET_ADDRSTRLEN + 8];
  int started;      /* the access handler has seen the headers */
  int too_big;
  int no_memory;    /* a header could not be copied */
  int answer;
  unsigned status;
  struct MHD_Response *response;
} Job;

typedef struct Shared Shared;

typedef struct Worker {
  Shared *sh;
  pthread_t thread;
  pthread_cond_t wake;
  Job *job;                /* handed over by submit; under Shared.lock */
  struct Worker *next_idle;
  lua_State *L;            /* made on first use, closed when the worker ends */
} Worker;

/* Everything the threads of one server share; C memory, freed after every
 * thread has ended. */
struct Shared {
  char *module;      /* handler module name */
  char *arg;         /* string handed to module.new(arg), may be NULL */
  size_t max_body;   /* larger request bodies get 413 */
  double idle_timeout, request_timeout;
  unsigned max_connections;

  /* the worker pool; the fields below under lock */
  pthread_mutex_t lock;
  Worker *workers;
  int nworkers, running; /* allocated; threads started */
  Worker *idle;          /* idle workers, the last to finish on top: a
                            light load keeps using the states already made */
  Job *queue_head, *queue_tail;
  int queued, stopping;
  long long requests, states;

  /* the connections and the watchdog; the fields below under conn_lock */
  pthread_mutex_t conn_lock;
  pthread_cond_t watch_wake;
  Conn *conns;
  unsigned nconns, peak;
  long long refused, closed_idle, closed_slow;
  uint64_t spread;       /* state of the generator spreading request deadlines */
  double refused_logged; /* when the limit was last reported on stderr */
  int watch_stop, watchdog_running;
  pthread_t watchdog;
};

typedef struct Server {
  struct MHD_Daemon *daemon;
  Shared *sh;
  char *cert, *key; /* PEM, kept until stop (MHD reads them) */
  size_t keylen;
  int port;
} Server;

/* ---- small helpers --------------------------------------------------------- */

/* Appends n bytes; 0 when out of memory. */
static int buffer_add(Buffer *b, const char *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n) cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL) return 0;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 1;
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

static struct MHD_Response *json_response(const char *body) {
  return MHD_create_response_from_buffer(strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
}

/* Sets j's answer to a JSON error with the given status. */
static void answer_error(Job *j, unsigned status, const char *body) {
  j->response = json_response(body);
  if (j->response) MHD_add_response_header(j->response, "Content-Type", "application/json");
  j->status = status;
  j->answer = j->response ? ANSWER_RESPONSE : ANSWER_DROP;
}

static const char SYSTEM_ERROR[] = "{\"code\":\"SYSTEM_ERROR\",\"message\":\"sandbox handler failed\"}";
static const char STOPPING[] = "{\"code\":\"SYSTEM_ERROR\",\"message\":\"server stopping\"}";
static const char TOO_LARGE[] = "{\"code\":\"PARAM_ERROR\",\"message\":\"request body too large\"}";

/* ---- handler states -------------------------------------------------------- */

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
  lua_setfield(L, LUA_REGISTRYINDEX, HANDLER_KEY);
  return 0;
}

/* A new state with the handler loaded, or NULL with the reason in why
 * (size n). */
static lua_State *handler_state(Shared *sh, char *why, size_t n) {
  lua_State *L = quan_newstate();
  if (L == NULL) {
    snprintf(why, n, "server: out of memory");
    return NULL;
  }
  lua_gc(L, LUA_GCGEN, 0, 0); /* requests make short-lived garbage */
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, load_handler);
  lua_pushlightuserdata(L, sh);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    snprintf(why, n, "%s", lua_tostring(L, -1));
    lua_close(L);
    return NULL;
  }
  lua_settop(L, 0);
  pthread_mutex_lock(&sh->lock);
  sh->states++;
  pthread_mutex_unlock(&sh->lock);
  return L;
}

/* The worker's state, made on first use; NULL (the reason on stderr) when
 * the handler cannot be loaded: tried again at the next request. */
static lua_State *worker_state(Worker *w) {
  if (w->L == NULL) {
    char why[1024];
    w->L = handler_state(w->sh, why, sizeof why);
    if (w->L == NULL) fprintf(stderr, "quan server: %s\n", why);
  }
  return w->L;
}

/* ---- running a request on a worker ------------------------------------------ */

/* [-0, +1] the request table of j: {method, path, url, body, headers,
 * remote}; repeated header names joined with ", " */
static void push_request(lua_State *L, const Job *j) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, j->method);
  lua_setfield(L, -2, "method");
  lua_pushstring(L, j->target);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, j->url);
  lua_setfield(L, -2, "url");
  lua_pushlstring(L, j->body.data ? j->body.data : "", j->body.len);
  lua_setfield(L, -2, "body");
  lua_newtable(L);
  for (size_t i = 0; i < j->headers.len;) {
    const char *name = j->headers.data + i;
    const char *value = name + strlen(name) + 1;
    i = (size_t)(value - j->headers.data) + strlen(value) + 1;
    if (lua_getfield(L, -1, name) == LUA_TSTRING) {
      lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), value);
      lua_setfield(L, -3, name);
    } else {
      lua_pushstring(L, value);
      lua_setfield(L, -3, name);
    }
    lua_pop(L, 1);
  }
  lua_setfield(L, -2, "headers");
  if (j->remote[0]) {
    lua_pushstring(L, j->remote);
    lua_setfield(L, -2, "remote");
  }
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

/* [-1, +0] protected: calls the handler with j's request and sets j's answer
 * from status, headers, body (none without a status from 100 to 999). The
 * job is a light userdata argument. */
static int run_handler(lua_State *L) {
  Job *j = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_getfield(L, LUA_REGISTRYINDEX, HANDLER_KEY);
  push_request(L, j);
  lua_call(L, 1, 3); /* status, headers, body at 1, 2, 3 */
  if ((lua_type(L, 1) == LUA_TSTRING && strcmp(lua_tostring(L, 1), "drop") == 0) ||
      (lua_isinteger(L, 1) && lua_tointeger(L, 1) == 0)) {
    j->answer = ANSWER_DROP; /* close without an answer */
    return 0;
  }
  lua_Integer status = lua_isinteger(L, 1) ? lua_tointeger(L, 1) : 0;
  if (status < 100 || status > 999) return 0; /* no answer: run_job says so */
  size_t blen = 0;
  const char *body = lua_type(L, 3) == LUA_TSTRING ? lua_tolstring(L, 3, &blen) : "";
  struct MHD_Response *res = MHD_create_response_from_buffer(blen, (void *)body, MHD_RESPMEM_MUST_COPY);
  if (res == NULL) return luaL_error(L, "server: out of memory");
  add_response_headers(L, 2, res);
  j->response = res;
  j->status = (unsigned)status;
  j->answer = ANSWER_RESPONSE;
  return 0;
}

/* Runs j on worker w and sets its answer. */
static void run_job(Worker *w, Job *j) {
  lua_State *L = worker_state(w);
  if (L == NULL) {
    answer_error(j, 500, SYSTEM_ERROR);
    return;
  }
  lua_settop(L, 0);
  lua_pushcfunction(L, msgh);
  lua_pushcfunction(L, run_handler);
  lua_pushlightuserdata(L, j);
  if (lua_pcall(L, 1, 0, 1) != LUA_OK) {
    fprintf(stderr, "quan server: %s\n", lua_tostring(L, -1));
    if (j->response) MHD_destroy_response(j->response);
    j->response = NULL;
    answer_error(j, 500, SYSTEM_ERROR);
  } else if (j->answer == ANSWER_NONE) {
    fprintf(stderr, "quan server: handler returned no status\n");
    answer_error(j, 500, SYSTEM_ERROR);
  }
  lua_settop(L, 0);
}

static void *worker_main(void *p) {
  Worker *w = p;
  Shared *sh = w->sh;
  pthread_mutex_lock(&sh->lock);
  for (;;) {
    while (w->job == NULL && !sh->stopping) pthread_cond_wait(&w->wake, &sh->lock);
    Job *j = w->job;
    if (j == NULL) break; /* stopping, and nothing was handed over */
    w->job = NULL;
    pthread_mutex_unlock(&sh->lock);
    run_job(w, j);
    pthread_mutex_lock(&sh->lock);
    /* ready for the next request before this answer goes out, so that the
     * client's next request finds this worker (and its state) idle: queued
     * work first, else on top of the idle stack */
    if (sh->queue_head) {
      w->job = sh->queue_head;
      sh->queue_head = w->job->next;
      if (sh->queue_head == NULL) sh->queue_tail = NULL;
      sh->queued--;
    } else {
      w->next_idle = sh->idle;
      sh->idle = w;
    }
    pthread_mutex_unlock(&sh->lock);
    MHD_resume_connection(j->connection); /* from here the job is the event loop's */
    pthread_mutex_lock(&sh->lock);
  }
  pthread_mutex_unlock(&sh->lock);
  if (w->L) lua_close(w->L);
  w->L = NULL;
  return NULL;
}

/* Hands j to an idle worker, or queues it; 0 when the pool is stopping. */
static int pool_submit(Shared *sh, Job *j) {
  pthread_mutex_lock(&sh->lock);
  if (sh->stopping) {
    pthread_mutex_unlock(&sh->lock);
    return 0;
  }
  sh->requests++;
  Worker *w = sh->idle;
  if (w) {
    sh->idle = w->next_idle;
    w->job = j;
    pthread_cond_signal(&w->wake);
  } else {
    j->next = NULL;
    if (sh->queue_tail) sh->queue_tail->next = j;
    else sh->queue_head = j;
    sh->queue_tail = j;
    sh->queued++;
  }
  pthread_mutex_unlock(&sh->lock);
  return 1;
}

/* Stops the pool: queued requests are answered 503 at once, running ones
 * finish; every worker thread is joined (each closes its state). */
static void pool_stop(Shared *sh) {
  pthread_mutex_lock(&sh->lock);
  sh->stopping = 1;
  Job *queued = sh->queue_head;
  sh->queue_head = sh->queue_tail = NULL;
  sh->queued = 0;
  for (int i = 0; i < sh->running; i++) pthread_cond_signal(&sh->workers[i].wake);
  pthread_mutex_unlock(&sh->lock);
  while (queued) {
    Job *j = queued;
    queued = j->next;
    answer_error(j, 503, STOPPING);
    MHD_resume_connection(j->connection);
  }
  for (int i = 0; i < sh->running; i++) pthread_join(sh->workers[i].thread, NULL);
  sh->running = 0;
}

/* ---- connections and the watchdog ------------------------------------------- */

/* Under conn_lock: request_timeout times a factor from 1 to 1.5 drawn at
 * random (xorshift), so that slow requests begun together are not all
 * closed, and reconnected with a TLS handshake each, in the same instant. */
static double request_allowance(Shared *sh) {
  uint64_t x = sh->spread;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  sh->spread = x;
  return sh->request_timeout * (1.0 + 0.5 * (double)(x >> 11) / 9007199254740992.0);
}

/* Under conn_lock: k enters phase, now. */
static void enter_phase(Shared *sh, Conn *k, int phase) {
  k->phase = phase;
  k->since = now_seconds();
  k->allowed = phase == PHASE_IDLE ? sh->idle_timeout : phase == PHASE_REQUEST ? request_allowance(sh) : 0;
}

static void set_phase(Shared *sh, Conn *k, int phase) {
  if (k == NULL) return;
  pthread_mutex_lock(&sh->conn_lock);
  enter_phase(sh, k, phase);
  pthread_mutex_unlock(&sh->conn_lock);
}

/* The Conn of a connection (its socket context). */
static Conn *conn_of(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? *(Conn *const *)ci : NULL; /* the info is the address of the context */
}

static void job_free(Job *j) {
  if (j == NULL) return;
  if (j->response) MHD_destroy_response(j->response);
  free(j->target);
  free(j->method);
  free(j->url);
  free(j->headers.data);
  free(j->body.data);
  free(j);
}

/* A connection starts or ends. The limit is checked here, under the lock,
 * on whichever event-loop thread accepted it: past max_connections the new
 * connection is shut down at once (libmicrohttpd then closes it), reported
 * on stderr at most every 10 s. */
static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  Shared *sh = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    Conn *k = calloc(1, sizeof *k);
    *socket_context = k;
    if (k == NULL || ci == NULL) { /* cannot watch it: end it at once */
      free(k);
      *socket_context = NULL;
      if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
      return;
    }
    k->fd = ci->connect_fd;
    int report = 0;
    pthread_mutex_lock(&sh->conn_lock);
    enter_phase(sh, k, PHASE_IDLE);
    if (sh->nconns >= sh->max_connections) {
      k->refused = k->shut = 1;
      sh->refused++;
      if (sh->refused_logged == 0 || k->since - sh->refused_logged >= 10) {
        sh->refused_logged = k->since;
        report = 1;
      }
    } else if (++sh->nconns > sh->peak) {
      sh->peak = sh->nconns;
    }
    k->next = sh->conns;
    if (sh->conns) sh->conns->prev = k;
    sh->conns = k;
    pthread_mutex_unlock(&sh->conn_lock);
    if (k->refused) shutdown(k->fd, SHUT_RDWR);
    if (report)
      fprintf(stderr, "quan server: %u connections open (max_connections): new connections are closed\n",
              sh->max_connections);
    return;
  }
  /* closed: libmicrohttpd closes the socket after this returns */
  Conn *k = *socket_context;
  if (k == NULL) return;
  pthread_mutex_lock(&sh->conn_lock);
  if (k->prev) k->prev->next = k->next;
  else sh->conns = k->next;
  if (k->next) k->next->prev = k->prev;
  if (!k->refused) sh->nconns--;
  pthread_mutex_unlock(&sh->conn_lock);
  job_free(k->job); /* a request never presented to the access handler */
  free(k);
  *socket_context = NULL;
}

/* Every WATCHDOG_PERIOD: shuts down the connections idle longer than
 * idle_timeout or with a request under way longer than its allowance
 * (request_timeout to 1.5 times that).
 * libmicrohttpd then sees the end of the stream and closes them itself (the
 * descriptor stays valid until their Conn is unlinked, under the lock). */
static void *watchdog_main(void *p) {
  Shared *sh = p;
  pthread_mutex_lock(&sh->conn_lock);
  while (!sh->watch_stop) {
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_nsec += (long)(WATCHDOG_PERIOD * 1e9);
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&sh->watch_wake, &sh->conn_lock, &until);
    double t = now_seconds();
    for (Conn *k = sh->conns; k; k = k->next) {
      if (k->shut) continue;
      if (k->phase == PHASE_HANDLER || t - k->since <= k->allowed) continue;
      if (k->phase == PHASE_IDLE) sh->closed_idle++;
      else sh->closed_slow++;
      shutdown(k->fd, SHUT_RDWR);
      k->shut = 1;
    }
  }
  pthread_mutex_unlock(&sh->conn_lock);
  return NULL;
}

/* ---- libmicrohttpd's request callbacks ------------------------------------- */

/* The request line has arrived: a new Job. */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c) {
  Shared *sh = cls;
  Conn *k = conn_of(c);
  if (k == NULL) return NULL;
  Job *j = calloc(1, sizeof *j);
  if (j == NULL) return NULL;
  j->target = strdup(uri ? uri : "/");
  j->connection = c;
  j->conn = k;
  pthread_mutex_lock(&sh->conn_lock);
  job_free(k->job); /* not expected: the previous request was completed */
  k->job = j;
  enter_phase(sh, k, PHASE_REQUEST);
  pthread_mutex_unlock(&sh->conn_lock);
  return j;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  (void)c;
  (void)toe;
  Shared *sh = cls;
  Job *j = *con_cls;
  if (j == NULL) return;
  Conn *k = j->conn;
  pthread_mutex_lock(&sh->conn_lock);
  if (k->job == j) k->job = NULL;
  enter_phase(sh, k, PHASE_IDLE);
  pthread_mutex_unlock(&sh->conn_lock);
  job_free(j);
  *con_cls = NULL;
}

/* header iterator: appends lower-cased "name\0value\0" to the job's list */
static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  Job *j = cls;
  size_t n = strlen(key);
  if (n >= 256) return MHD_YES;
  char name[256];
  for (size_t i = 0; i <= n; i++) name[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
  if (value == NULL) value = "";
  if (!buffer_add(&j->headers, name, n + 1) || !buffer_add(&j->headers, value, strlen(value) + 1)) {
    j->no_memory = 1;
    return MHD_NO;
  }
  return MHD_YES;
}

/* Copies what a worker needs from the connection (method, url, headers,
 * remote address) into j; 0 when out of memory. */
static int job_prepare(Job *j, struct MHD_Connection *c, const char *method, const char *url) {
  j->method = strdup(method);
  j->url = strdup(url);
  if (j->method == NULL || j->url == NULL || j->target == NULL) return 0;
  MHD_get_connection_values(c, MHD_HEADER_KIND, collect_header, j);
  if (j->no_memory) return 0;
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (ci && ci->client_addr && ci->client_addr->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ci->client_addr;
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    snprintf(j->remote, sizeof j->remote, "%s:%d", ip, (int)ntohs(sin->sin_port));
  }
  return 1;
}

static enum MHD_Result queue_answer(struct MHD_Connection *c, Job *j) {
  if (j->answer == ANSWER_DROP) return MHD_NO; /* close without an answer */
  enum MHD_Result ret = MHD_queue_response(c, j->status, j->response);
  MHD_destroy_response(j->response);
  j->response = NULL;
  return ret;
}

/* The access handler, on the event-loop thread: called once the headers are
 * in, once per piece of body, once the request is whole, and once more
 * after a worker resumed the connection with the answer. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  (void)version;
  Shared *sh = cls;
  Job *j = *con_cls;
  if (j == NULL || j->target == NULL) return MHD_NO; /* out of memory in on_uri */
  if (j->answer != ANSWER_NONE) return queue_answer(c, j);
  if (!j->started) {
    j->started = 1;
    return MHD_YES;
  }
  if (*upload_size > 0) {
    size_t n = *upload_size;
    *upload_size = 0;
    if (j->too_big || j->body.len + n > sh->max_body) {
      j->too_big = 1;
      return MHD_YES;
    }
    return buffer_add(&j->body, upload, n) ? MHD_YES : MHD_NO;
  }
  if (j->too_big) {
    answer_error(j, 413, TOO_LARGE);
    return queue_answer(c, j);
  }
  if (!job_prepare(j, c, method, url)) return MHD_NO;
  set_phase(sh, j->conn, PHASE_HANDLER);
  /* suspended before a worker can resume it */
  MHD_suspend_connection(c);
  if (!pool_submit(sh, j)) {
    answer_error(j, 503, STOPPING);
    MHD_resume_connection(c);
  }
  return MHD_YES;
}

/* ---- start and stop ----------------------------------------------------------- */

/* Called once every thread has ended (after MHD_stop_daemon). */
static void shared_free(Shared *sh) {
  if (sh == NULL) return;
  if (sh->workers) {
    for (int i = 0; i < sh->nworkers; i++) {
      if (sh->workers[i].L) lua_close(sh->workers[i].L); /* a state made at start, never run */
      pthread_cond_destroy(&sh->workers[i].wake);
    }
    free(sh->workers);
  }
  while (sh->conns) { /* none once libmicrohttpd has stopped */
    Conn *k = sh->conns;
    sh->conns = k->next;
    job_free(k->job);
    free(k);
  }
  pthread_mutex_destroy(&sh->lock);
  pthread_mutex_destroy(&sh->conn_lock);
  pthread_cond_destroy(&sh->watch_wake);
  free(sh->module);
  free(sh->arg);
  free(sh);
}

/* Stops accepting, answers or finishes every request, closes every
 * connection and handler state. Idempotent; also for a half-made server. */
static void server_release(Server *s) {
  Shared *sh = s->sh;
  if (s->daemon) {
    MHD_socket listener = MHD_quiesce_daemon(s->daemon);
    if (listener != MHD_INVALID_SOCKET) close(listener);
  }
  if (sh) {
    pool_stop(sh); /* every suspended connection is resumed */
    if (sh->watchdog_running) {
      pthread_mutex_lock(&sh->conn_lock);
      sh->watch_stop = 1;
      pthread_cond_signal(&sh->watch_wake);
      pthread_mutex_unlock(&sh->conn_lock);
      pthread_join(sh->watchdog, NULL);
      sh->watchdog_running = 0;
    }
  }
  if (s->daemon) {
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
  }
  if (sh) {
    shared_free(sh);
    s->sh = NULL;
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
    else lua_pushfstring(L, "server: %s: out of memory", what);
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

static double optseconds(lua_State *L, const char *field, double def) {
  lua_getfield(L, 1, field);
  double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  if (!(v > 0 && v <= 86400)) luaL_argerror(L, 1, lua_pushfstring(L, "%s must be between 0 and 86400 seconds", field));
  return v;
}

static const char *const OPTIONS[] = {"handler", "arg", "host", "port", "cert", "key", "idle_timeout",
                                      "request_timeout", "max_body", "max_connections", "workers", "threads",
                                      NULL};

/* Raises for a key of the options table that start does not know. */
static void check_options(lua_State *L) {
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pop(L, 1);
    int known = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; OPTIONS[i] && !known; i++) known = strcmp(lua_tostring(L, -1), OPTIONS[i]) == 0;
    if (!known) luaL_argerror(L, 1, lua_pushfstring(L, "unknown option '%s'", luaL_tolstring(L, -1, NULL)));
  }
}

/* The descriptors the process may open, after raising the soft limit to the
 * hard one when `needed` is more than the soft limit allows. */
static rlim_t descriptor_limit(rlim_t needed) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return needed; /* unknown: assume enough */
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < needed) {
    struct rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    else if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > needed) { /* e.g. beyond fs.nr_open */
      raised.rlim_cur = needed;
      if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
    }
  }
  return rl.rlim_cur;
}

/* start{handler = "module", arg = string, host = "127.0.0.1", port = 0,
 *       cert = pem | "file://...", key = pem | "file://...",
 *       idle_timeout = 60, request_timeout = 10, max_body = 8 MiB,
 *       max_connections = 4096, workers = 16, threads = 1}
 *   -> server | nil, message, code ("bind", "tls", "handler", "limit",
 *      "memory") */
static int l_start(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_options(L);
  const char *module = optstring(L, "handler", NULL);
  luaL_argcheck(L, module != NULL, 1, "handler (a module name) is required");
  const char *arg = optstring(L, "arg", NULL);
  const char *host = optstring(L, "host", "127.0.0.1");
  lua_Integer port = optint(L, "port", 0);
  luaL_argcheck(L, port >= 0 && port <= 65535, 1, "port out of range");
  const char *cert = optstring(L, "cert", NULL);
  const char *key = optstring(L, "key", NULL);
  luaL_argcheck(L, (cert == NULL) == (key == NULL), 1, "cert and key go together");
  double idle_timeout = optseconds(L, "idle_timeout", 60);
  double request_timeout = optseconds(L, "request_timeout", 10);
  lua_Integer max_body = optint(L, "max_body", 8 << 20);
  luaL_argcheck(L, max_body > 0, 1, "max_body must be positive");
  lua_Integer workers = optint(L, "workers", 16);
  lua_Integer threads = optint(L, "threads", 1);
  luaL_argcheck(L, threads >= 1 && threads <= 64, 1, "threads must be between 1 and 64");
  luaL_argcheck(L, workers >= 1 && workers <= 1024, 1, "workers must be between 1 and 1024");
  lua_Integer max_connections = optint(L, "max_connections", 0); /* 0: the default */
  lua_getfield(L, 1, "max_connections");
  luaL_argcheck(L, lua_isnil(L, -1) || (max_connections >= 1 && max_connections <= 1000000), 1,
                "max_connections must be between 1 and 1000000");
  lua_pop(L, 1);
  struct sockaddr_in sin;
  memset(&sin, 0, sizeof sin);
  sin.sin_family = AF_INET;
  sin.sin_port = htons((uint16_t)port);
  luaL_argcheck(L, inet_pton(AF_INET, host, &sin.sin_addr) == 1, 1, "host must be an IPv4 address");

  /* descriptors: one per connection, a few per worker, a reserve */
  rlim_t others = (rlim_t)workers * FDS_PER_WORKER + (rlim_t)threads * FDS_PER_THREAD + FDS_RESERVED;
  rlim_t connections = max_connections ? (rlim_t)max_connections : DEFAULT_MAX_CONNECTIONS;
  rlim_t limit = descriptor_limit(connections + others);
  if (max_connections == 0 && limit < connections + others && limit >= others + 16)
    connections = limit - others; /* the default: as many as the descriptors allow */
  if (limit < connections + others)
    return quan_fail(L, "limit",
                "server: %d connections and %d workers need %d file descriptors; the limit is %d (ulimit -n)",
                (int)connections, (int)workers, (int)(connections + others), (int)limit);

  Server *s = lua_newuserdatauv(L, sizeof(Server), 0);
  memset(s, 0, sizeof *s);
  luaL_setmetatable(L, SERVER_MT);
  Shared *sh = calloc(1, sizeof(Shared));
  if (sh == NULL) return quan_fail(L, "memory", "server: out of memory");
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&sh->lock, NULL);
  pthread_mutex_init(&sh->conn_lock, NULL);
  pthread_cond_init(&sh->watch_wake, &ca);
  pthread_condattr_destroy(&ca);
  s->sh = sh;
  sh->module = strdup(module);
  sh->arg = arg ? strdup(arg) : NULL;
  sh->max_body = (size_t)max_body;
  sh->idle_timeout = idle_timeout;
  sh->request_timeout = request_timeout;
  sh->spread = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)sh ^ (uint64_t)time(NULL);
  sh->max_connections = (unsigned)connections;
  sh->workers = calloc((size_t)workers, sizeof(Worker));
  if (sh->module == NULL || (arg && sh->arg == NULL) || sh->workers == NULL) goto nomem;
  sh->nworkers = (int)workers;
  for (int i = 0; i < sh->nworkers; i++) {
    sh->workers[i].sh = sh;
    pthread_cond_init(&sh->workers[i].wake, NULL);
  }

  struct MHD_OptionItem tls[4] = {{MHD_OPTION_END, 0, NULL}};
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
  if (cert) {
    size_t clen;
    s->cert = load_pem(L, cert, &clen, "cert");
    if (s->cert == NULL) goto fail_msg;
    s->key = load_pem(L, key, &s->keylen, "key");
    if (s->key == NULL) goto fail_msg;
    flags |= MHD_USE_TLS;
    tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert};
    tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key};
    tls[2] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES};
    tls[3] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
  }

  /* the first worker's state now, so that a handler that cannot load is
   * reported here rather than as a 500 to every request */
  char why[1024];
  sh->workers[0].L = handler_state(sh, why, sizeof why);
  if (sh->workers[0].L == NULL) {
    server_release(s);
    return quan_fail(L, "handler", "%s", why);
  }
  /* the workers and the watchdog before the first connection; the idle
   * stack with worker 0, whose state exists, on top */
  for (int i = sh->nworkers - 1; i >= 0; i--) {
    sh->workers[i].next_idle = sh->idle;
    sh->idle = &sh->workers[i];
  }
  for (int i = 0; i < sh->nworkers; i++) {
    if (pthread_create(&sh->workers[i].thread, NULL, worker_main, &sh->workers[i]) != 0) {
      server_release(s);
      return quan_fail(L, "memory", "server: cannot start worker threads");
    }
    sh->running++;
  }
  if (pthread_create(&sh->watchdog, NULL, watchdog_main, sh) != 0) {
    server_release(s);
    return quan_fail(L, "memory", "server: cannot start the watchdog thread");
  }
  sh->watchdog_running = 1;

  struct sigaction sa;
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) signal(SIGPIPE, SIG_IGN);
  /* libmicrohttpd's own limit (shared out among its threads) stays well
   * above ours, so that on_connection decides: past its own limit it would
   * stop accepting and leave clients waiting */
  s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, sh,
                               MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sin,
                               MHD_OPTION_URI_LOG_CALLBACK, on_uri, sh,
                               MHD_OPTION_NOTIFY_COMPLETED, on_completed, sh,
                               MHD_OPTION_NOTIFY_CONNECTION, on_connection, sh,
                               MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)ceil(idle_timeout),
                               MHD_OPTION_CONNECTION_LIMIT, (unsigned)(connections + 1024) * (unsigned)threads,
                               MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                               MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)(connections < 4096 ? connections : 4096),
                               MHD_OPTION_ARRAY, tls,
                               MHD_OPTION_END);
  if (s->daemon == NULL) {
    int e = errno;
    server_release(s);
    if (e == EADDRINUSE || e == EACCES || e == EADDRNOTAVAIL)
      return quan_fail(L, "bind", "server: cannot listen on %s:%d: %s", host, (int)port, strerror(e));
    /* libmicrohttpd leaves errno as it found it when TLS set-up fails */
    if (cert)
      return quan_fail(L, "tls", "server: cannot start TLS on %s:%d: the certificate or key is not usable "
                       "(not PEM, or the key is not the certificate's)", host, (int)port);
    return quan_fail(L, "bind", "server: cannot start on %s:%d: %s", host, (int)port, strerror(e));
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

static void setint(lua_State *L, const char *name, long long v) {
  lua_pushinteger(L, (lua_Integer)v);
  lua_setfield(L, -2, name);
}

/* server:stats() -> {connections, peak_connections, max_connections,
 * refused, closed_idle, closed_slow, requests, queued, workers, states} */
static int server_stats(lua_State *L) {
  Server *s = checkserver(L);
  Shared *sh = s->sh;
  lua_createtable(L, 0, 10);
  pthread_mutex_lock(&sh->conn_lock);
  long long conns = sh->nconns, peak = sh->peak, refused = sh->refused, idle = sh->closed_idle,
            slow = sh->closed_slow;
  pthread_mutex_unlock(&sh->conn_lock);
  pthread_mutex_lock(&sh->lock);
  long long requests = sh->requests, queued = sh->queued, states = sh->states;
  pthread_mutex_unlock(&sh->lock);
  setint(L, "connections", conns);
  setint(L, "peak_connections", peak);
  setint(L, "max_connections", sh->max_connections);
  setint(L, "refused", refused);
  setint(L, "closed_idle", idle);
  setint(L, "closed_slow", slow);
  setint(L, "requests", requests);
  setint(L, "queued", queued);
  setint(L, "workers", sh->nworkers);
  setint(L, "states", states);
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

/* server:signalled() -> "INT" | "TERM" | nil: the signal server:wait has
 * caught and not yet returned for. A tick doing long work asks it between
 * pieces of work, to return at once. */
static int server_signalled(lua_State *L) {
  checkserver(L);
  if (got_signal == SIGINT) lua_pushstring(L, "INT");
  else if (got_signal == SIGTERM) lua_pushstring(L, "TERM");
  else lua_pushnil(L);
  return 1;
}

/* server:stop(); also __gc and __close. Stops accepting, answers queued
 * requests 503, waits for running handlers, closes every connection and
 * handler state. Idempotent. */
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
  {"stats", server_stats},
  {"wait", server_wait},
  {"signalled", server_signalled},
  {"stop", server_stop},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"start", l_start},
  {NULL, NULL}
};

int luaopen_quan_server(lua_State *L) {
  quan_library_open(L, &microhttpd_library);
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
