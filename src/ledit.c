/* ledit.c: quan.edit, line editing and history for the REPL through
 * libedit's readline-compatible layer (BSD licence; see docs/repl.md for why
 * not GNU readline).
 *
 *   edit.readline(prompt)      -> line | nil (EOF) | false, "interrupted"
 *   edit.add_history(line)
 *   edit.load_history(path)    -> true | nil, message, code
 *   edit.save_history(path)    -> true | nil, message, code
 *   edit.set_completer(fn|nil) fn(word, before) -> array of candidates
 *   edit.xpcall(f, msgh, ...)  -> as xpcall, Ctrl-C raising the interrupt
 *
 * readline's callbacks carry no user pointer, so the completion callback
 * finds the Lua state in a static that is set only while edit.readline runs
 * (the callback runs on the same thread, inside that call) and cleared
 * before it returns. The completer itself is anchored in the registry with
 * luaL_ref. SIGINT while editing is caught by a handler that only sets a
 * flag; installed without SA_RESTART it makes libedit's read() fail with
 * EINTR, so readline returns and we report "interrupted". */
#include <errno.h>
#include <locale.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <editline/readline.h>
#include "quan.h"
#include "sonames.h"

/* libedit (its readline layer), opened when this module is first required (quan_library_open,
 * src/quan.h): each name below goes through the address found there. */
#define EDIT_SYMBOLS_(X) X(readline) X(add_history) X(read_history) X(write_history) \
  X(stifle_history) X(rl_initialize) X(rl_attempted_completion_function) \
  X(rl_attempted_completion_over) X(rl_basic_word_break_characters) X(rl_catch_signals) \
  X(rl_catch_sigwinch) X(rl_completer_word_break_characters) X(rl_completion_append_character) \
  X(rl_line_buffer) X(rl_readline_name)
QUAN_LIBRARY(edit_library, QUAN_SONAME_EDIT, EDIT_SYMBOLS_)
#define readline (*readline_)
#define add_history (*add_history_)
#define read_history (*read_history_)
#define write_history (*write_history_)
#define stifle_history (*stifle_history_)
#define rl_initialize (*rl_initialize_)
#define rl_attempted_completion_function (*rl_attempted_completion_function_)
#define rl_attempted_completion_over (*rl_attempted_completion_over_)
#define rl_basic_word_break_characters (*rl_basic_word_break_characters_)
#define rl_catch_signals (*rl_catch_signals_)
#define rl_catch_sigwinch (*rl_catch_sigwinch_)
#define rl_completer_word_break_characters (*rl_completer_word_break_characters_)
#define rl_completion_append_character (*rl_completion_append_character_)
#define rl_line_buffer (*rl_line_buffer_)
#define rl_readline_name (*rl_readline_name_)

static lua_State *editL = NULL;         /* only during edit.readline */
static int completer_ref = LUA_NOREF;   /* registry ref of the completer */
static volatile sig_atomic_t got_sigint = 0;
static int initialized = 0;

/* Characters that end a completion word. '.' and ':' are among them, so
 * the word is the last name segment (`cou` in `wx.v3.marketing.favor.cou`)
 * and the Lua completer looks at the text before it for context. */
static char word_breaks[] = " \t\n\"\\'`@$><=;|&{}(),+-*/%^~[]#.:";

/* ---- completion ---------------------------------------------------------- */

static char **matches_from_lua(const char *text, int start, int end) {
  lua_State *L = editL;
  char **out = NULL;
  rl_attempted_completion_over = 1; /* never fall back to file names */
  if (L == NULL || completer_ref == LUA_NOREF) return NULL;
  (void)start;
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 4)) return NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, completer_ref);
  lua_pushstring(L, text);
  lua_pushlstring(L, rl_line_buffer ? rl_line_buffer : "", rl_line_buffer ? (size_t)end : 0);
  /* [completer, word, before] -> [candidates] */
  if (lua_pcall(L, 2, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
    lua_settop(L, top);
    return NULL;
  }
  lua_Integer n = luaL_len(L, -1);
  if (n <= 0) { lua_settop(L, top); return NULL; }
  /* readline wants [common prefix, match1, ..., NULL], malloc'ed */
  out = calloc((size_t)n + 2, sizeof *out);
  if (out == NULL) { lua_settop(L, top); return NULL; }
  size_t k = 1;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    const char *s = lua_tostring(L, -1);
    if (s) out[k++] = strdup(s);
    lua_pop(L, 1);
  }
  lua_settop(L, top);
  if (k == 1) { free(out); return NULL; }
  /* common prefix of all candidates */
  size_t len = strlen(out[1]);
  for (size_t i = 2; i < k; i++) {
    size_t j = 0;
    while (j < len && out[i][j] == out[1][j]) j++;
    len = j;
  }
  if (k == 2) { out[0] = out[1]; out[1] = NULL; }
  else out[0] = strndup(out[1], len);
  return out;
}

/* ---- SIGINT ------------------------------------------------------------- */

static void on_sigint(int sig) {
  (void)sig;
  got_sigint = 1;
}

/* Installs handler for SIGINT without SA_RESTART; saves the old action. */
static void catch_sigint(void (*handler)(int), struct sigaction *old) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, old);
}

static void init(void) {
  if (initialized) return;
  initialized = 1;
  rl_readline_name = "quan";
  rl_catch_signals = 0;  /* libedit would re-raise to the process group */
  rl_catch_sigwinch = 1;
  rl_basic_word_break_characters = word_breaks;
  rl_completer_word_break_characters = word_breaks;
  rl_attempted_completion_function = matches_from_lua;
  rl_completion_append_character = '\0';
  rl_initialize();
  stifle_history(2000);
}

/* edit.readline(prompt) -> line | nil | false, "interrupted" */
static int l_readline(lua_State *L) {
  const char *prompt = luaL_optstring(L, 1, "> ");
  struct sigaction old;
  init();
  got_sigint = 0;
  catch_sigint(on_sigint, &old);
  /* libedit decodes input by LC_CTYPE: take the user's, and UTF-8 when that
   * is plain C, so Chinese text can be typed; restored afterwards. */
  char saved[64] = "C";
  const char *cur = setlocale(LC_CTYPE, NULL);
  if (cur) snprintf(saved, sizeof saved, "%s", cur);
  const char *loc = setlocale(LC_CTYPE, "");
  if (loc == NULL || strcmp(loc, "C") == 0 || strcmp(loc, "POSIX") == 0)
    setlocale(LC_CTYPE, "C.UTF-8");
  editL = L;
  rl_attempted_completion_over = 1;
  errno = 0;
  char *line = readline(prompt);
  int interrupted = got_sigint;
  editL = NULL;
  setlocale(LC_CTYPE, saved);
  sigaction(SIGINT, &old, NULL);
  got_sigint = 0;
  if (interrupted) {
    free(line);
    fputs("^C\n", stdout); /* leave the cancelled line visible, start afresh */
    fflush(stdout);
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "interrupted");
    return 2;
  }
  if (line == NULL) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushstring(L, line);
  free(line);
  return 1;
}

/* edit.add_history(line) */
static int l_add_history(lua_State *L) {
  const char *line = luaL_checkstring(L, 1);
  init();
  add_history(line);
  return 0;
}

/* file_result(L, rc, what, path) -> true | nil, message, code: the result of
 * libedit's read_history/write_history (0, an errno, or -1 with errno set) */
static int file_result(lua_State *L, int rc, const char *what, const char *path) {
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  int e = rc > 0 ? rc : errno;
  lua_pushfstring(L, "%s %s", what, path);
  if (e == 0) return quan_fail(L, "io", "%s: failed", lua_tostring(L, -1));
  return quan_fail_errno(L, e, lua_tostring(L, -1));
}

/* edit.load_history(path) -> true | nil, message, code */
static int l_load_history(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  init();
  errno = 0;
  return file_result(L, read_history(path), "load history", path);
}

/* edit.save_history(path) -> true | nil, message, code */
static int l_save_history(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  init();
  errno = 0;
  return file_result(L, write_history(path), "save history", path);
}

/* edit.set_completer(fn | nil) */
static int l_set_completer(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_unref(L, LUA_REGISTRYINDEX, completer_ref);
  completer_ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 1)) {
    lua_settop(L, 1);
    completer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return 0;
}

/* ---- interruptible calls ------------------------------------------------- */

static lua_State *callL = NULL; /* for the SIGINT handler only, as lua.c */

static void stop_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  quan_interrupt(L);
}

static void on_sigint_call(int sig) {
  (void)sig;
  lua_State *t = quan_running_task ? quan_running_task : callL; /* a task running now, else f */
  if (t) lua_sethook(t, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT, 1);
}

/* edit.xpcall(f, msgh, ...) -> true, results... | false, msgh(err)
 * A Ctrl-C while f runs raises the interrupt inside f (through a hook, as
 * lua.c does), whatever handler was installed before; the previous handler
 * is restored afterwards, so the REPL survives any number of Ctrl-C. */
static int l_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checkany(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  struct sigaction old;
  lua_State *prev = callL;
  lua_pushboolean(L, 1);  /* [f, msgh, args..., true] */
  lua_pushvalue(L, 1);    /* [f, msgh, args..., true, f] */
  lua_rotate(L, 3, 2);    /* [f, msgh, true, f, args...] */
  callL = L;
  catch_sigint(on_sigint_call, &old);
  int status = lua_pcall(L, n - 2, LUA_MULTRET, 2);
  sigaction(SIGINT, &old, NULL);
  lua_sethook(L, NULL, 0, 0); /* a Ctrl-C that came too late to fire */
  callL = prev;
  if (status != LUA_OK) {
    lua_pushboolean(L, 0);
    lua_replace(L, 3);
    return 2;
  }
  return lua_gettop(L) - 2;
}

static const luaL_Reg funcs[] = {
  {"readline", l_readline},
  {"add_history", l_add_history},
  {"load_history", l_load_history},
  {"save_history", l_save_history},
  {"set_completer", l_set_completer},
  {"xpcall", l_xpcall},
  {NULL, NULL}
};

int luaopen_quan_edit(lua_State *L) {
  quan_library_open(L, &edit_library);
  luaL_newlib(L, funcs);
  return 1;
}
