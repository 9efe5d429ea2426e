/* host.c: makes a Lua state quan's: natives and embedded modules reachable
 * through require, and the client ("wechatpay") with quan's tools plugged
 * into its hooks; the one failure result of the natives, the interrupt
 * value and the signal handler that raises it (quan.h). */
#include <ctype.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "quan.h"

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

static const luaL_Reg natives[] = {
  {"cjson", luaopen_cjson},
  {"cjson.safe", luaopen_cjson_safe},
#define QUAN_NATIVE(name) {"quan." #name, luaopen_quan_##name},
#include "natives.h"
#undef QUAN_NATIVE
  {NULL, NULL}
};

static const quan_embedded *find_embedded(const char *name) {
  for (const quan_embedded *m = quan_embedded_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* load_embedded(m) -> [chunk] | raises: m's bytecode loaded as a function.
 * Once loaded, bytecode is never read again, so the pages of the embedded
 * modules are dropped from the process (MADV_DONTNEED on read-only pages of
 * the binary: they stay in the page cache, and read back in if a later
 * require needs them). Without it the kernel keeps the pages it mapped
 * around each chunk read, most of the 0.5 MB of modules, in every quan's
 * RSS. */
static void load_embedded(lua_State *L, const quan_embedded *m) {
  static uintptr_t first, last; /* the pages holding all the chunks */
  if (first == 0) {
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo = UINTPTR_MAX, hi = 0;
    for (const quan_embedded *e = quan_embedded_modules; e->name; e++) {
      if ((uintptr_t)e->chunk < lo) lo = (uintptr_t)e->chunk;
      if ((uintptr_t)e->chunk + e->size > hi) hi = (uintptr_t)e->chunk + e->size;
    }
    first = (lo + page - 1) & ~(page - 1); /* whole pages only */
    last = hi & ~(page - 1);
  }
  if (luaL_loadbufferx(L, m->chunk, m->size, m->chunkname, "b") != LUA_OK)
    lua_error(L);
  if (last > first) madvise((void *)first, last - first, MADV_DONTNEED);
}

/* searcher(name) -> loader, chunkname | message
 * Placed right after package.preload, so an embedded module wins over a file
 * of the same name on package.path. */
static int embedded_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const quan_embedded *m = find_embedded(name);
  if (m == NULL) {
    lua_pushfstring(L, "no embedded module '%s'", name);
    return 1;
  }
  load_embedded(L, m);
  lua_pushstring(L, m->chunkname + 1);
  return 2;
}

/* load_client(name, file) -> wechatpay: package.preload's loader of the
 * client. It runs the embedded "wechatpay", then quan.hooks' install on it:
 * quan's tools (dry run, the private sandbox) plug into the client's hooks
 * without the client naming them, and only once a script uses the client
 * (docs/client.md, "Hooks"). */
static int load_client(lua_State *L) {
  const quan_embedded *m = find_embedded("wechatpay");
  if (m == NULL) return luaL_error(L, "no embedded module 'wechatpay'");
  load_embedded(L, m);
  lua_pushliteral(L, "wechatpay");
  lua_pushstring(L, m->chunkname + 1);
  lua_call(L, 2, 1);                   /* [name, file, client] */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "quan.hooks");
  lua_call(L, 1, 1);                   /* [..., client, quan.hooks] */
  lua_getfield(L, -1, "install");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);                   /* [..., client, quan.hooks] */
  lua_pop(L, 1);
  return 1;
}

void quan_openlibs(lua_State *L) {
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  for (const luaL_Reg *r = natives; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  lua_pushcfunction(L, load_client);
  lua_setfield(L, -2, "wechatpay");
  lua_pop(L, 1);
  /* package.searchers: insert ours at position 2 */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  lua_Integer n = (lua_Integer)luaL_len(L, -1);
  for (lua_Integer i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
  quan_push_interrupt(L); /* made now: a Ctrl-C hook only looks it up */
  lua_pop(L, 1);
}

lua_State *quan_newstate(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  quan_openlibs(L);
  return L;
}

/* ---- libraries opened on first use ---------------------------------------- */

static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;

void quan_library_open(lua_State *L, quan_library *lib) {
  char why[256] = "";
  pthread_mutex_lock(&library_lock);
  if (!lib->open) {
    /* never closed: the module's functions may be called until exit */
    void *handle = dlopen(lib->soname, RTLD_LAZY | RTLD_LOCAL);
    if (handle == NULL) snprintf(why, sizeof why, "%s", dlerror());
    for (int i = 0; handle && lib->names[i]; i++) {
      void *symbol = dlsym(handle, lib->names[i]);
      if (symbol == NULL) {
        snprintf(why, sizeof why, "no symbol %s", lib->names[i]);
        break;
      }
      memcpy(lib->slots[i], &symbol, sizeof symbol); /* POSIX: a function's address as a void * */
    }
    lib->open = why[0] == '\0';
  }
  pthread_mutex_unlock(&library_lock);
  if (why[0]) luaL_error(L, "cannot load %s: %s", lib->soname, why);
}

/* ---- failures -------------------------------------------------------------- */

int quan_fail(lua_State *L, const char *code, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lua_pushstring(L, code);
  return 3;
}

int quan_fail_errno(lua_State *L, int e, const char *what) {
  char code[32] = "error";
  const char *name = strerrorname_np(e); /* "ENOENT" */
  if (name != NULL && name[0] == 'E' && name[1] != '\0') {
    size_t n = 0;
    for (const char *c = name + 1; *c && n < sizeof code - 1; c++) code[n++] = (char)tolower((unsigned char)*c);
    code[n] = '\0';
  }
  return quan_fail(L, code, "%s: %s", what, strerror(e));
}

/* ---- interrupts ------------------------------------------------------------ */

static const char interrupt_key = 'i'; /* registry[&interrupt_key]: the interrupt */

static int interrupt_tostring(lua_State *L) {
  lua_pushliteral(L, "interrupted!");
  return 1;
}

void quan_push_interrupt(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &interrupt_key) != LUA_TNIL) return;
  lua_pop(L, 1);
  lua_newuserdatauv(L, 0, 0);
  if (luaL_newmetatable(L, "quan.interrupt")) { /* __name: its type in messages */
    lua_pushcfunction(L, interrupt_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &interrupt_key);
}

int quan_is_interrupt(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  quan_push_interrupt(L);
  int yes = lua_rawequal(L, idx, -1);
  lua_pop(L, 1);
  return yes;
}

int quan_interrupt(lua_State *L) {
  quan_push_interrupt(L);
  return lua_error(L);
}

/* ---- signals that interrupt ------------------------------------------------ */

lua_State *volatile quan_signal_state = NULL;
volatile sig_atomic_t quan_signal_caught = 0;
volatile sig_atomic_t quan_signal_held = 0;

/* the hook a signal sets: removes itself and raises the interrupt where Lua
 * runs next */
static void interrupt_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  quan_interrupt(L);
}

void quan_signal_handler(int sig) {
  quan_signal_caught = sig;
  signal(sig, SIG_DFL); /* a second one ends the process (a second Ctrl-C, systemd's SIGKILL alike) */
  if (quan_signal_held) return; /* noted only: quan.os.interrupt_signal() tells it */
  lua_State *L = quan_running_task ? quan_running_task : quan_signal_state;
  if (L != NULL) lua_sethook(L, interrupt_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

void quan_signal_release(lua_State *L) {
  if (lua_gethook(L) == interrupt_hook) lua_sethook(L, NULL, 0, 0);
}
