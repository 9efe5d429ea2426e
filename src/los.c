/* los.c: quan.os, the few operating-system calls the Lua side needs and the
 * standard library lacks: clocks, processes, files and directories, locks,
 * terminals. Bad arguments raise; failures of the world return nil,
 * message, code, the code named after errno ("noent"; quan_fail_errno).
 * Also the interrupt value a Ctrl-C raises, and its test. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "quan.h"

extern char **environ;

#define LOCK_MT "quan.os.lock"
#define TRAP_MT "quan.os.trap"
#define DIR_MT "quan.os.dir" /* a directory being listed: closed by list or the collector */

/* now() -> seconds (float), monotonic */
static int os_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* time() -> seconds since the epoch (float, sub-second) */
static int os_time(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

/* cputime() -> user + system seconds of this process (float) */
static int os_cputime(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushnumber(L, (lua_Number)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                        (lua_Number)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
  return 1;
}

/* maxrss() -> peak resident set size in KiB */
static int os_maxrss(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, ru.ru_maxrss);
  return 1;
}

/* sleep(seconds) -> true; an interrupting signal ends it early */
static int os_sleep(lua_State *L) {
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && s <= 1e9, 1, s != s ? "NaN is not a duration" : s < 0 ? "negative duration" : "duration too long");
  struct timespec ts = {(time_t)s, (long)((s - (lua_Number)(time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static int os_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

_Thread_local lua_State *quan_running_task = NULL;

/* resume(co, ...) -> as coroutine.resume(co, ...), with co recorded as the
 * running task meanwhile (quan_running_task): quan.async resumes its tasks
 * with it, so a Ctrl-C reaches a task that never yields. */
static int os_resume(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argexpected(L, co != NULL, 1, "coroutine");
  int narg = lua_gettop(L) - 1;
  if (!lua_checkstack(co, narg)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "too many arguments to resume");
    return 2;
  }
  lua_xmove(L, co, narg);
  lua_State *prev = quan_running_task;
  quan_running_task = co;
  int nres;
  int status = lua_resume(co, L, narg, &nres);
  quan_running_task = prev;
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      lua_pushboolean(L, 0);
      lua_pushliteral(L, "too many results to resume");
      return 2;
    }
    lua_pushboolean(L, 1);
    lua_xmove(co, L, nres);
    return nres + 1;
  }
  lua_pushboolean(L, 0);
  lua_xmove(co, L, 1); /* the error object */
  return 2;
}

/* ---- resume_within: a coroutine with a time limit --------------------------
 * The limit of the resume under way on this thread (a nested one keeps the
 * earlier deadline and puts the outer's back). A call and count hook, which
 * the coroutines made meanwhile inherit (a C hook needs nothing of the
 * registry), checks the clock at each function call and every LIMIT_EVERY
 * instructions; past the deadline it checks at every instruction and raises
 * wherever the code is not quan's own (a C function being called goes by its
 * caller): quan's modules (quan.async's loop, the client) never stop
 * half-way through a change of their state, and a handler cannot catch the
 * error for good. */
#define LIMIT_EVERY 1000
#define LIMIT_MASK (LUA_MASKCALL | LUA_MASKCOUNT)

typedef struct Limit {
  int active, stopped;
  double at; /* monotonic seconds */
} Limit;

static _Thread_local Limit limit;

static double monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* quan's own code: the embedded modules, by their chunk names */
static int quan_source(const char *source) {
  return strncmp(source, "@lua/quan/", 10) == 0 || strncmp(source, "@lua/wechatpay/", 15) == 0;
}

static int quan_code(lua_State *L, lua_Debug *ar) {
  if (!lua_getinfo(L, "S", ar)) return 1;
  if (ar->what[0] != 'C') return quan_source(ar->source);
  lua_Debug caller; /* a C function about to run: whose call it is */
  if (!lua_getstack(L, 1, &caller) || !lua_getinfo(L, "S", &caller)) return 1;
  return quan_source(caller.source);
}

static void limit_hook(lua_State *L, lua_Debug *ar) {
  if (!limit.active) { /* a coroutine kept past its limited resume */
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (monotonic() <= limit.at) return;
  if (lua_gethookcount(L) != 1) lua_sethook(L, limit_hook, LIMIT_MASK, 1);
  if (quan_code(L, ar)) return;
  limit.stopped = 1;
  lua_pushliteral(L, "time limit passed");
  lua_error(L);
}

/* co_status(L, co) -> coroutine.status's word for co */
static const char *co_status(lua_State *L, lua_State *co) {
  lua_Debug ar;
  if (co == L) return "running";
  switch (lua_status(co)) {
  case LUA_YIELD: return "suspended";
  case LUA_OK:
    if (lua_getstack(co, 0, &ar)) return "normal";
    return lua_gettop(co) == 0 ? "dead" : "suspended";
  default: return "dead";
  }
}

/* resume_within(seconds, co, ...) -> stopped, then as resume(co, ...):
 * stopped is true when the limit stopped co or a coroutine made meanwhile */
static int os_resume_within(lua_State *L) {
  lua_Number seconds = luaL_checknumber(L, 1);
  lua_State *co = lua_tothread(L, 2);
  luaL_argexpected(L, co != NULL, 2, "coroutine");
  luaL_argcheck(L, seconds >= 0 && seconds < 1e9, 1, "seconds out of range");
  lua_remove(L, 1); /* [co, args...]: as resume's */
  const char *status = co_status(L, co);
  if (strcmp(status, "suspended") != 0) { /* what resume says, its hook untouched */
    lua_pushboolean(L, 0);
    lua_pushboolean(L, 0);
    lua_pushfstring(L, "cannot resume %s coroutine", strcmp(status, "dead") == 0 ? "dead" : "non-suspended");
    return 3;
  }
  Limit outer = limit;
  double at = monotonic() + seconds;
  if (outer.active && outer.at < at) at = outer.at;
  limit = (Limit){1, 0, at};
  lua_Hook hook = lua_gethook(co);
  int mask = lua_gethookmask(co), count = lua_gethookcount(co);
  lua_sethook(co, limit_hook, LIMIT_MASK, LIMIT_EVERY);
  int n = os_resume(L);
  lua_sethook(co, hook, mask, count); /* as it was (a kept coroutine, or one resumed again) */
  int stopped = limit.stopped;
  limit = outer;
  lua_pushboolean(L, stopped);
  lua_insert(L, -n - 1);
  return n + 1;
}

static int os_getppid(lua_State *L) {
  lua_pushinteger(L, getppid());
  return 1;
}

/* isatty(fd) -> boolean */
static int os_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* columns() -> width of the terminal on stderr, or nil */
static int os_columns(lua_State *L) {
  struct winsize ws;
  if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    lua_pushinteger(L, ws.ws_col);
    return 1;
  }
  return 0;
}

/* exe() -> path of the running binary */
static int os_exe(lua_State *L) {
  char buf[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return quan_fail_errno(L, errno, "/proc/self/exe");
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

/* cwd() -> the current directory (getcwd; $PWD may be stale) | nil, message, code */
static int os_cwd(lua_State *L) {
  char buf[PATH_MAX];
  if (getcwd(buf, sizeof buf) == NULL) return quan_fail_errno(L, errno, "getcwd");
  lua_pushstring(L, buf);
  return 1;
}

/* mode(path) -> permission bits (integer) | nil, message, code */
static int os_mode(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return quan_fail_errno(L, errno, path);
  lua_pushinteger(L, st.st_mode & 07777);
  return 1;
}

/* stat(path) -> {kind =, size =, mode =, uid =, gid =, links =, device =,
 * inode =} | nil, message, code; kind is "file", "directory", "char",
 * "block", "fifo", "socket" or "other" (symbolic links are followed); links
 * the number of names (hard links) the file has; device and inode say which
 * file it is (two paths to one file give the same pair) */
static int os_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0) return quan_fail_errno(L, errno, path);
  const char *kind = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory"
    : S_ISCHR(st.st_mode) ? "char" : S_ISBLK(st.st_mode) ? "block"
    : S_ISFIFO(st.st_mode) ? "fifo" : S_ISSOCK(st.st_mode) ? "socket" : "other";
  lua_createtable(L, 0, 8);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, st.st_mode & 07777);
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)st.st_gid);
  lua_setfield(L, -2, "gid");
  lua_pushinteger(L, (lua_Integer)st.st_nlink);
  lua_setfield(L, -2, "links");
  lua_pushinteger(L, (lua_Integer)st.st_dev);
  lua_setfield(L, -2, "device");
  lua_pushinteger(L, (lua_Integer)st.st_ino);
  lua_setfield(L, -2, "inode");
  return 1;
}

/* geteuid() -> the effective user id of this process */
static int os_geteuid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)geteuid());
  return 1;
}

/* dumpable() -> whether this process may dump core (prctl PR_GET_DUMPABLE;
 * quan.crypto clears it when a key is loaded) */
static int os_dumpable(lua_State *L) {
  lua_pushboolean(L, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 1);
  return 1;
}

/* [-0, +1] pushes a resource limit: an integer, or math.huge for none */
static void push_rlimit(lua_State *L, rlim_t v) {
  if (v == RLIM_INFINITY || v > (rlim_t)LUA_MAXINTEGER) lua_pushnumber(L, (lua_Number)HUGE_VAL);
  else lua_pushinteger(L, (lua_Integer)v);
}

/* rlimit(name [, soft]) -> soft, hard | nil, message, code: the soft and
 * hard limits of a resource ("core": bytes of a core dump, "cpu": seconds
 * of CPU time, "data": bytes of data segment and heap), math.huge for no
 * limit; with `soft`, the soft limit is set first (at most the hard one) */
static int os_rlimit(lua_State *L) {
  static const char *const names[] = {"core", "cpu", "data", NULL};
  static const int resources[] = {RLIMIT_CORE, RLIMIT_CPU, RLIMIT_DATA};
  int resource = resources[luaL_checkoption(L, 1, NULL, names)];
  int set = !lua_isnoneornil(L, 2);
  lua_Number soft = set ? luaL_checknumber(L, 2) : 0;
  luaL_argcheck(L, soft >= 0, 2, "a limit is a number >= 0");
  struct rlimit rl;
  if (getrlimit(resource, &rl) != 0) return quan_fail_errno(L, errno, "getrlimit");
  if (set) {
    rl.rlim_cur = soft >= (lua_Number)LUA_MAXINTEGER ? RLIM_INFINITY : (rlim_t)soft;
    if (setrlimit(resource, &rl) != 0) return quan_fail_errno(L, errno, "setrlimit");
  }
  push_rlimit(L, rl.rlim_cur);
  push_rlimit(L, rl.rlim_max);
  return 2;
}

/* chmod(path, mode) -> true | nil, message, code */
static int os_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mode_t mode = (mode_t)luaL_checkinteger(L, 2);
  if (chmod(path, mode) != 0) return quan_fail_errno(L, errno, path);
  lua_pushboolean(L, 1);
  return 1;
}

/* mkdir(path [, mode=0700]) -> true | nil, message, code (an existing
 * directory is not an error; an existing file is) */
static int os_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  mode_t mode = (mode_t)luaL_optinteger(L, 2, 0700);
  if (mkdir(path, mode) != 0) {
    struct stat st;
    if (errno != EEXIST) return quan_fail_errno(L, errno, path);
    if (stat(path, &st) != 0) return quan_fail_errno(L, errno, path);
    if (!S_ISDIR(st.st_mode)) {
      return quan_fail_errno(L, ENOTDIR, path);
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int dir_release(lua_State *L) {
  DIR **box = luaL_checkudata(L, 1, DIR_MT);
  if (*box != NULL) {
    closedir(*box);
    *box = NULL;
  }
  return 0;
}

/* list(dir) -> { name, ... } | nil, message, code: the names of the
 * entries of dir but "." and "..", in no particular order. The DIR is
 * boxed first, so a memory error while listing leaves it to the collector. */
static int os_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  luaL_setmetatable(L, DIR_MT);
  *box = opendir(path);
  if (*box == NULL) return quan_fail_errno(L, errno, path);
  lua_newtable(L);
  lua_Integer n = 0;
  for (;;) {
    errno = 0;
    struct dirent *entry = readdir(*box);
    if (entry == NULL) break;
    if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) continue;
    lua_pushstring(L, entry->d_name);
    lua_rawseti(L, -2, ++n);
  }
  int e = errno; /* 0 at the end of the directory */
  closedir(*box);
  *box = NULL;
  if (e != 0) return quan_fail_errno(L, e, path);
  return 1;
}

/* mkdtemp([prefix="/tmp/quan-"]) -> path | nil, message, code */
static int os_mkdtemp(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, "/tmp/quan-");
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, prefix);
  luaL_addstring(&b, "XXXXXX");
  luaL_pushresult(&b);
  char *tmpl = strdup(lua_tostring(L, -1));
  if (tmpl == NULL) return luaL_error(L, "out of memory");
  if (mkdtemp(tmpl) == NULL) {
    int e = errno;
    free(tmpl);
    return quan_fail_errno(L, e, prefix);
  }
  lua_pushstring(L, tmpl);
  free(tmpl);
  return 1;
}

/* spawn(argv [, opts]) -> pid | nil, message, code
 * argv: {"path", "arg1", ...}; the path is looked up on PATH.
 * opts.stdout / opts.stderr: a file path to write to (truncated);
 * opts.stdin: a file path to read from (default: inherited);
 * opts.detach = true: the child gets a process group of its own, so a Ctrl-C
 * at the terminal (SIGINT to the foreground group) does not reach it. */
static int os_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "empty argv");
  const char *paths[3] = {NULL, NULL, NULL};
  int detach = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "detach");
    detach = lua_toboolean(L, -1);
    lua_pop(L, 1);
    static const char *names[3] = {"stdin", "stdout", "stderr"};
    for (int i = 0; i < 3; i++) {
      int t = lua_getfield(L, 2, names[i]);
      if (t != LUA_TNIL && t != LUA_TSTRING)
        return luaL_error(L, "bad argument #2 to 'spawn' (%s must be a path string, got %s)", names[i],
                          luaL_typename(L, -1));
      paths[i] = lua_tostring(L, -1); /* a string anchored in opts until we return */
      lua_pop(L, 1);
    }
  }
  const char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    argv[i] = lua_tostring(L, -1);
    luaL_argcheck(L, argv[i] != NULL, 1, "argv entries must be strings");
    lua_pop(L, 1); /* strings stay alive: they are in the argv table */
  }
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  for (int i = 0; i < 3; i++) {
    if (paths[i] == NULL) continue;
    int flags = i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_TRUNC;
    posix_spawn_file_actions_addopen(&fa, i, paths[i], flags, 0644);
  }
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (detach) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t pid;
  int rc = posix_spawnp(&pid, argv[0], &fa, &attr, (char *const *)argv, environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    /* the child's failure to open a redirect looks like a failed exec: name
     * the file when one of them is the cause */
    for (int i = 0; i < 3; i++) {
      if (paths[i] == NULL) continue;
      int fd = open(paths[i], i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd < 0) return quan_fail_errno(L, errno, paths[i]);
      close(fd);
    }
    return quan_fail_errno(L, rc, argv[0]);
  }
  lua_pushinteger(L, pid);
  return 1;
}

/* kill(pid [, signal="TERM"]) -> true | nil, message, code */
static int os_kill(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  static const char *names[] = {"TERM", "KILL", "INT", "HUP", "STOP", "CONT", "USR1", "ZERO", NULL};
  static const int sigs[] = {SIGTERM, SIGKILL, SIGINT, SIGHUP, SIGSTOP, SIGCONT, SIGUSR1, 0};
  int sig = sigs[luaL_checkoption(L, 2, "TERM", names)];
  if (kill(pid, sig) != 0) return quan_fail_errno(L, errno, "kill");
  lua_pushboolean(L, 1);
  return 1;
}

/* wait(pid [, nohang]) -> "exit"|"signal", code | false (still running) |
 * nil, message, code */
static int os_wait(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int status;
  pid_t r = waitpid(pid, &status, lua_toboolean(L, 2) ? WNOHANG : 0);
  if (r < 0) return quan_fail_errno(L, errno, "waitpid");
  if (r == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (WIFSIGNALED(status)) {
    lua_pushliteral(L, "signal");
    lua_pushinteger(L, WTERMSIG(status));
  } else {
    lua_pushliteral(L, "exit");
    lua_pushinteger(L, WEXITSTATUS(status));
  }
  return 2;
}

/* lock(path) -> lock | nil, message, code ("busy" when another process
 * holds it). An exclusive, non-blocking flock(2) on path (created 0600);
 * released by lock:close(), by the collector, or when the process dies. */
typedef struct {
  int fd;
} Lock;

static int lock_release(lua_State *L) {
  Lock *k = luaL_checkudata(L, 1, LOCK_MT);
  if (k->fd >= 0) {
    close(k->fd); /* closing drops the flock */
    k->fd = -1;
  }
  return 0;
}

static int os_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  Lock *k = lua_newuserdatauv(L, sizeof *k, 0);
  k->fd = -1;
  luaL_setmetatable(L, LOCK_MT);
  k->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (k->fd < 0) return quan_fail_errno(L, errno, path);
  if (flock(k->fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(k->fd);
    k->fd = -1;
    if (e == EWOULDBLOCK) return quan_fail(L, "busy", "%s: held by another process", path);
    return quan_fail_errno(L, e, path);
  }
  return 1;
}

/* ---- traps ----------------------------------------------------------------
 * trap({"TERM", "HUP", ...}) -> trap: while the trap is open, each signal
 * named raises the interrupt in Lua as a Ctrl-C does (quan_signal_handler;
 * a second one of a kind ends the process). A signal ignored when the trap
 * is made (nohup's SIGHUP) stays ignored. trap:hold() -> the signals are
 * only noted from then on (interrupt_signal() names them) and a hook set
 * and not yet fired on the caller's thread or the main state is removed:
 * what runs after it is not interrupted. trap:close() (also __close and
 * __gc) puts back the actions the signals had before and ends a hold; it
 * is idempotent. */
static const char *const trap_names[] = {"INT", "TERM", "HUP", NULL};
static const int trap_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define TRAP_MAX 3

typedef struct {
  int open;
  int n;
  int sig[TRAP_MAX];
  struct sigaction old[TRAP_MAX];
  sig_atomic_t old_held;
} Trap;

static int trap_close(lua_State *L) {
  Trap *t = luaL_checkudata(L, 1, TRAP_MT);
  if (t->open) {
    t->open = 0;
    for (int i = 0; i < t->n; i++) sigaction(t->sig[i], &t->old[i], NULL);
    quan_signal_held = t->old_held;
  }
  return 0;
}

static int trap_hold(lua_State *L) {
  Trap *t = luaL_checkudata(L, 1, TRAP_MT);
  luaL_argcheck(L, t->open, 1, "trap is closed");
  quan_signal_held = 1;
  quan_signal_release(L);
  if (quan_signal_state != NULL) quan_signal_release(quan_signal_state);
  return 0;
}

static int os_trap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int want[TRAP_MAX] = {0};
  lua_Integer n = luaL_len(L, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    const char *name = lua_tostring(L, -1);
    int k = -1;
    for (int j = 0; name && trap_names[j]; j++)
      if (strcmp(name, trap_names[j]) == 0) k = j;
    if (k < 0) return luaL_error(L, "bad argument #1 to 'trap' (signal %d: expected INT, TERM or HUP)", (int)i);
    want[k] = 1;
    lua_pop(L, 1);
  }
  Trap *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  luaL_setmetatable(L, TRAP_MT);
  t->old_held = quan_signal_held;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = quan_signal_handler; /* no SA_RESTART: a blocking wait returns to Lua */
  sigemptyset(&sa.sa_mask);
  for (int k = 0; k < TRAP_MAX; k++) {
    if (!want[k]) continue;
    struct sigaction old;
    sigaction(trap_signals[k], NULL, &old);
    if (old.sa_handler == SIG_IGN) continue; /* ignored on entry: stays so */
    t->sig[t->n] = trap_signals[k];
    t->old[t->n] = old;
    t->n++;
  }
  quan_signal_caught = 0;
  quan_signal_held = 0;
  t->open = 1;
  for (int i = 0; i < t->n; i++) sigaction(t->sig[i], &sa, NULL);
  return 1;
}

/* interrupt_signal() -> "INT" | "TERM" | "HUP" | nil: the signal the host
 * caught last (since the last trap was made), which raised the interrupt
 * unless a trap held it */
static int os_interrupt_signal(lua_State *L) {
  int sig = quan_signal_caught;
  for (int k = 0; k < TRAP_MAX; k++) {
    if (trap_signals[k] == sig) {
      lua_pushstring(L, trap_names[k]);
      return 1;
    }
  }
  lua_pushnil(L);
  return 1;
}

/* is_interrupt(v) -> true when v is the interrupt a Ctrl-C raised */
static int os_is_interrupt(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushboolean(L, quan_is_interrupt(L, 1));
  return 1;
}

static const luaL_Reg lock_methods[] = {
  {"close", lock_release},
  {"__gc", lock_release},
  {"__close", lock_release},
  {NULL, NULL}
};

static const luaL_Reg trap_methods[] = {
  {"hold", trap_hold},
  {"close", trap_close},
  {"__gc", trap_close},
  {"__close", trap_close},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"now", os_now},
  {"time", os_time},
  {"cputime", os_cputime},
  {"maxrss", os_maxrss},
  {"sleep", os_sleep},
  {"getpid", os_getpid},
  {"getppid", os_getppid},
  {"resume", os_resume},
  {"resume_within", os_resume_within},
  {"isatty", os_isatty},
  {"columns", os_columns},
  {"exe", os_exe},
  {"cwd", os_cwd},
  {"mode", os_mode},
  {"stat", os_stat},
  {"geteuid", os_geteuid},
  {"dumpable", os_dumpable},
  {"rlimit", os_rlimit},
  {"chmod", os_chmod},
  {"mkdir", os_mkdir},
  {"mkdtemp", os_mkdtemp},
  {"list", os_list},
  {"spawn", os_spawn},
  {"kill", os_kill},
  {"wait", os_wait},
  {"lock", os_lock},
  {"is_interrupt", os_is_interrupt},
  {"trap", os_trap},
  {"interrupt_signal", os_interrupt_signal},
  {NULL, NULL}
};

int luaopen_quan_os(lua_State *L) {
  if (luaL_newmetatable(L, LOCK_MT)) {
    luaL_setfuncs(L, lock_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, TRAP_MT)) {
    luaL_setfuncs(L, trap_methods, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newmetatable(L, DIR_MT);
  lua_pushcfunction(L, dir_release);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  quan_push_interrupt(L);
  lua_setfield(L, -2, "interrupt");
  lua_pushliteral(L, QUAN_VERSION);
  lua_setfield(L, -2, "VERSION");
  return 1;
}
