/* quan.h: what the host and the native modules share. */
#ifndef QUAN_H
#define QUAN_H

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include <signal.h>

/* quan's version: the one definition. Lua reads it as quan.os.VERSION and
 * the User-Agent as quan.http.USER_AGENT (which the client sends too). */
#define QUAN_VERSION "0.1.0"
#define QUAN_USER_AGENT "quan/" QUAN_VERSION

/* One Lua module compiled into the binary (build/embedded.c). */
typedef struct quan_embedded {
  const char *name;      /* module name, e.g. "quan.async" */
  const char *chunkname; /* "@lua/quan/async.lua" */
  const char *chunk;     /* its bytecode (scripts/embed.sh) */
  size_t size;
} quan_embedded;

extern const quan_embedded quan_embedded_modules[];

/* Native modules: every src/l<name>.c exports luaopen_quan_<name>. */
#define QUAN_NATIVE(name) int luaopen_quan_##name(lua_State *L);
#include "natives.h"
#undef QUAN_NATIVE

/* A new state with the standard libraries, cjson, the natives and the
 * embedded modules reachable through require ("wechatpay" with quan's tools
 * in its hooks: quan.hooks). Used by main.c and by any native that needs a
 * state of its own (e.g. a server thread). NULL when out of memory. */
lua_State *quan_newstate(void);

/* The allocator of the main state (alloc.c): small blocks from free lists;
 * NULL where the state keeps malloc (valgrind's memcheck, AddressSanitizer). */
lua_Alloc quan_alloc(void);

/* Opens the same set on an existing state (standard libraries excluded). */
void quan_openlibs(lua_State *L);

/* The coroutine quan.os.resume is running in this thread, or NULL: where a
 * Ctrl-C handler sets its hook, so that a task running Lua without yielding
 * is interrupted too (a hook on the main state would fire only once the
 * task yields). */
extern _Thread_local lua_State *quan_running_task;

/* ---- failures (docs/errors.md) ------------------------------------------
 * A native raises for a mistake of its caller (luaL_check*, luaL_error) and
 * returns nil, message, code for a failure of the world: the code is a
 * stable lower-case word. These two are the only ways a native builds that
 * result, as luaL_fileresult is for Lua's own libraries. */

/* [-0, +3] quan_fail(L, code, fmt, ...) -> 3: pushes nil, the message
 * (lua_pushfstring's formats) and code; `return quan_fail(...)`. */
int quan_fail(lua_State *L, const char *code, const char *fmt, ...);

/* [-0, +3] quan_fail_errno(L, e, what) -> 3: pushes nil, "what: <strerror(e)>"
 * and the code of errno e: its name in lower case without the leading E
 * ("noent" for ENOENT, "acces" for EACCES; "error" for a number without a
 * name). */
int quan_fail_errno(lua_State *L, int e, const char *what);

/* ---- interrupts -----------------------------------------------------------
 * A Ctrl-C raises one value per state, the interrupt: a userdata that prints
 * as "interrupted!". quan.os.interrupt is that value and quan.os.is_interrupt
 * the one test for it; an error text is never searched. */

/* [-0, +1] pushes the interrupt of L's state (made on first use). */
void quan_push_interrupt(lua_State *L);

/* quan_is_interrupt(L, idx) -> 1 when the value at idx is the interrupt */
int quan_is_interrupt(lua_State *L, int idx);

/* Raises the interrupt: what a Ctrl-C hook does. Does not return. */
int quan_interrupt(lua_State *L);

/* ---- libraries opened on first use ---------------------------------------
 * SQLite, libmicrohttpd and libedit are opened (dlopen) when quan.sqlite,
 * quan.server or quan.edit is first required, not when quan starts: a
 * client that never uses them does not map them, nor what they link (their
 * pages would count in its memory, their relocations in its start-up). A
 * module lists the symbols it calls; its calls go through the addresses
 * found (see lsqlite.c). The sonames come from the build (build/sonames.h). */

typedef struct quan_library {
  const char *soname;        /* e.g. "libsqlite3.so.0" */
  const char *const *names;  /* the symbols the module uses, NULL-terminated */
  void *const *slots;        /* slots[i]: the function pointer names[i] goes into */
  int open;                  /* every symbol found (set once, under a lock) */
} quan_library;

/* quan_library_open(L, lib): opens lib->soname and finds its symbols, once
 * per process (thread-safe); raises "cannot load <soname>: <why>". */
void quan_library_open(lua_State *L, quan_library *lib);

/* QUAN_LIBRARY(var, soname, SYMBOLS): the quan_library `var` of a module's
 * SYMBOLS, an X-macro list of the functions it calls: a pointer `f_` for
 * each, their names and slots. The module then defines each `f` as `(*f_)`,
 * so its calls read as direct ones. */
#define QUAN_SLOT_(f) static __typeof__(f) *f##_;
#define QUAN_NAME_(f) #f,
#define QUAN_ADDRESS_(f) &f##_,
#define QUAN_LIBRARY(var, soname, SYMBOLS)                                  \
  SYMBOLS(QUAN_SLOT_)                                                       \
  static const char *const var##_names[] = {SYMBOLS(QUAN_NAME_) NULL};     \
  static void *const var##_slots[] = {SYMBOLS(QUAN_ADDRESS_)};              \
  static quan_library var = {soname, var##_names, var##_slots, 0};

/* ---- signals that interrupt ----------------------------------------------
 * SIGINT while the host runs Lua (main.c), and SIGTERM and SIGHUP while a
 * batch runs (quan.os.trap), go to quan_signal_handler, which only does
 * what a handler may: it notes the signal, resets it to its default action
 * (a second one ends the process) and sets a hook on the running task, else
 * on quan_signal_state, that raises the interrupt the next time Lua code
 * runs. Installed without SA_RESTART, so a blocking wait returns EINTR and
 * Lua runs again soon. */

/* The state whose hook a signal sets when no quan.async task runs: main.c
 * sets it to its state before it calls into Lua. */
extern lua_State *volatile quan_signal_state;

/* The last signal the handler caught (0: none yet); quan.os.interrupt_signal
 * names it. */
extern volatile sig_atomic_t quan_signal_caught;

/* Nonzero: signals are noted, not turned into the interrupt (quan.os.trap's
 * hold(): a batch writing its summary finishes it). */
extern volatile sig_atomic_t quan_signal_held;

/* The handler itself (async-signal-safe). */
void quan_signal_handler(int sig);

/* Removes from L a hook the handler set and that has not fired yet. */
void quan_signal_release(lua_State *L);

#endif
