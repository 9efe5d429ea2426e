/* main.c: the quan command. A drop-in for the stand-alone lua interpreter
 * (same options, same `arg` table, same exit codes) plus quan's long options
 * (each sets an environment variable, so it reaches every module) and
 * `--version`. Scripts run here (`quan script.lua`, `quan run script.lua`);
 * every other command word goes to quan.cli, whose table lists the commands
 * (`quan help`).
 *
 * Everything runs inside one protected call (pmain); errors go through
 * msghandler, which adds a traceback; SIGINT sets a hook that raises the
 * interrupt (quan.h; it prints as "interrupted!") the next time Lua code
 * runs. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "quan.h"

static const char *progname = "quan";

/* ---- SIGINT ------------------------------------------------------------ */

/* quan_signal_handler (host.c) sets a hook that raises the interrupt in the
 * quan.async task running now, else in this state. Installed without
 * SA_RESTART, so a blocking wait (poll in quan.http) returns EINTR and
 * control comes back to Lua, where the hook fires. SIGTERM and SIGHUP keep
 * their default action (the process ends, as under lua) except while a
 * batch runs (quan.os.trap). */
static void set_sigint(void (*handler)(int)) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
}

/* ---- errors ------------------------------------------------------------ */

static void message(const char *msg) {
  if (progname) fprintf(stderr, "%s: ", progname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

static int report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    message(msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  return status;
}

/* embedded(source) -> 1 when source is the chunk name of one of quan's
 * own modules (compiled into the binary), 0 for a script's code */
static int embedded(const char *source) {
  for (const quan_embedded *m = quan_embedded_modules; m->name; m++)
    if (strcmp(m->chunkname, source) == 0) return 1;
  return 0;
}

/* push_place(L) -> 1 with "chunk:line:" of the innermost Lua function on
 * the stack that is not one of quan's modules pushed (the line of the
 * script that made the failing call: `assert(...)`, a client call whose
 * error was raised deep inside), 0 when there is none */
static int push_place(lua_State *L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 || embedded(ar.source)) continue;
    lua_pushfstring(L, "%s:%d:", ar.short_src, ar.currentline);
    return 1;
  }
  return 0;
}

/* placed(msg) -> 1 when msg starts with a place "chunk:line:" (as
 * error() writes it) before any ": " of its text */
static int placed(const char *msg) {
  for (const char *p = msg; *p && *p != '\n'; p++) {
    if (p[0] == ':' && p[1] == ' ') return 0;
    if (p[0] == ':' && p[1] >= '0' && p[1] <= '9') {
      const char *q = p + 1;
      while (*q >= '0' && *q <= '9') q++;
      if (*q == ':') return 1;
    }
  }
  return 0;
}

/* msghandler(err) -> text: an error that names no place gets the place of
 * the script's failing call first; a string gets a traceback, an error
 * table that prints itself (an API error: its text names the request id)
 * does not */
/* a command of quan.cli runs: an interrupt that ends it is no script's
 * error, and gets no traceback (run_command says it and exits 128 + signal) */
static int command_running = 0;
static int command_interrupted = 0;

static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (quan_is_interrupt(L, 1) && command_running) {
    command_interrupted = 1;
    lua_pushstring(L, "interrupted");
    return 1;
  }
  if (quan_is_interrupt(L, 1)) msg = luaL_tolstring(L, 1, NULL); /* a traceback: where it was, as lua.c */
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
      msg = lua_tostring(L, -1);
      if (!placed(msg) && push_place(L)) lua_pushfstring(L, "%s %s", lua_tostring(L, -1), msg);
      return 1;
    }
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  if (!placed(msg) && push_place(L)) msg = lua_pushfstring(L, "%s %s", lua_tostring(L, -1), msg);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

/* docall: [f, args...] -> [results...] | [message] */
static int docall(lua_State *L, int narg, int nres) {
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  quan_signal_state = L;
  set_sigint(quan_signal_handler);
  int status = lua_pcall(L, narg, nres, base);
  signal(SIGINT, SIG_DFL);
  lua_remove(L, base);
  return status;
}

static int dochunk(lua_State *L, int status) {
  if (status == LUA_OK) status = docall(L, 0, 0);
  return report(L, status);
}

static int dostring(lua_State *L, const char *s, const char *name) {
  return dochunk(L, luaL_loadbuffer(L, s, strlen(s), name));
}

/* ---- options ----------------------------------------------------------- */

static int needs_value(const char *option);

static void print_usage(const char *badoption) {
  FILE *out = badoption ? stderr : stdout;
  if (badoption) {
    if (badoption[1] == 'e' || badoption[1] == 'l' || needs_value(badoption))
      fprintf(stderr, "%s: '%s' needs argument\n", progname, badoption);
    else
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, badoption);
  }
  fprintf(out,
    "usage: %s [options] [script [args]]\n"
    "       %s [options] COMMAND [args]\n"
    "Lua options:\n"
    "  -e stat   execute string 'stat'\n"
    "  -i        enter interactive mode after executing 'script'\n"
    "  -l mod    require library 'mod' into global 'mod'\n"
    "  -l g=mod  require library 'mod' into global 'g'\n"
    "  -v        show version information\n"
    "  -E        ignore environment variables\n"
    "  -W        turn warnings on\n"
    "  --        stop handling options\n"
    "  -         stop handling options and execute stdin\n"
    "  -h, --help  show this help\n"
    "  --version   show quan's version and exit\n"
    "quan options (each sets the environment variable named):\n"
    "  --profile NAME   QUAN_PROFILE   profile of the config file to use\n"
    "  --config FILE    QUAN_CONFIG    config file\n"
    "  --verbose        QUAN_DEBUG=1   print requests and responses, secrets redacted\n"
    "  --sandbox        QUAN_SANDBOX=1 run against a private local sandbox\n"
    "  --dry-run        QUAN_DRY_RUN=1 print each request instead of sending it\n"
    "  --log-format F   QUAN_LOG_FORMAT  a batch's log: 'bar', 'json' or 'text'\n",
    progname, progname);
}

#define EXIT_USAGE 2 /* quan's own usage errors; a bad Lua option exits 1, as in lua.c */

static const char *const log_formats[] = {"bar", "json", "text", NULL};

/* Long options are another spelling of an environment variable, so they
 * reach every module (and child process) the same way. `values`, when set,
 * lists the only values the option takes. */
static const struct {
  const char *flag, *env;
  int takes_value;
  const char *const *values;
} longopts[] = {
  {"--profile", "QUAN_PROFILE", 1, NULL},
  {"--config", "QUAN_CONFIG", 1, NULL},
  {"--log-format", "QUAN_LOG_FORMAT", 1, log_formats},
  {"--verbose", "QUAN_DEBUG", 0, NULL},
  {"--sandbox", "QUAN_SANDBOX", 0, NULL},
  {"--dry-run", "QUAN_DRY_RUN", 0, NULL},
  {NULL, NULL, 0, NULL}
};

/* allowed(values, v) -> 1 when values is NULL or lists v */
static int allowed(const char *const *values, const char *v) {
  if (values == NULL) return 1;
  for (int k = 0; values[k]; k++)
    if (strcmp(values[k], v) == 0) return 1;
  return 0;
}

/* print_bad_value(argv, i): says that the long option at argv[i] (with
 * its value after '=' or in argv[i + 1]) has a value it does not take */
static void print_bad_value(char **argv, int i) {
  const char *a = argv[i], *eq = strchr(a, '=');
  int n = eq ? (int)(eq - a) : (int)strlen(a);
  const char *value = eq ? eq + 1 : argv[i + 1];
  fprintf(stderr, "%s: %.*s must be one of", progname, n, a);
  for (int k = 0; longopts[k].flag; k++) {
    if (strncmp(longopts[k].flag, a, (size_t)n) != 0 || longopts[k].flag[n] != '\0') continue;
    for (int j = 0; longopts[k].values[j]; j++)
      fprintf(stderr, "%s %s", j ? "," : "", longopts[k].values[j]);
  }
  fprintf(stderr, ", got '%s'\n", value);
  fflush(stderr);
}

/* needs_value(option) -> 1 when option is a long option that takes a value */
static int needs_value(const char *option) {
  for (int k = 0; longopts[k].flag; k++)
    if (strcmp(option, longopts[k].flag) == 0) return longopts[k].takes_value;
  return 0;
}

/* Returns how many argv entries the long option used, 0 if not one,
 * -1 on a missing value, -2 on a value the option does not take. */
static int longopt(char **argv, int i) {
  const char *a = argv[i];
  for (int k = 0; longopts[k].flag; k++) {
    size_t n = strlen(longopts[k].flag);
    if (strncmp(a, longopts[k].flag, n) != 0) continue;
    if (a[n] == '=' && longopts[k].takes_value) {
      if (!allowed(longopts[k].values, a + n + 1)) return -2;
      setenv(longopts[k].env, a + n + 1, 1);
      return 1;
    }
    if (a[n] != '\0') continue;
    if (!longopts[k].takes_value) {
      setenv(longopts[k].env, "1", 1);
      return 1;
    }
    if (argv[i + 1] == NULL) return -1;
    if (!allowed(longopts[k].values, argv[i + 1])) return -2;
    setenv(longopts[k].env, argv[i + 1], 1);
    return 2;
  }
  return 0;
}

#define has_error 1 /* bad option */
#define has_i 2     /* -i */
#define has_v 4     /* -v */
#define has_e 8     /* -e */
#define has_E 16    /* -E */
#define has_h 32    /* -h, --help */
#define has_bad_value 64 /* a long option with a value it does not take */
#define has_version 128  /* --version */

/* collectargs: scans options up to the script; *first is the index of the
 * script (or argc). Returns the flags seen, has_error on a bad one or
 * has_bad_value on a bad value (then *first is the bad option's index). */
static int collectargs(char **argv, int *first) {
  int args = 0;
  int i;
  for (i = *first; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args; /* the script */
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return has_h;
    if (strcmp(argv[i], "--version") == 0) return has_version;
    if (argv[i][1] == '-' && argv[i][2] != '\0') {
      int used = longopt(argv, i);
      if (used == -2) return has_bad_value;
      if (used <= 0) return has_error;
      i += used - 1;
      continue;
    }
    switch (argv[i][1]) {
      case '-': /* '--' */
        if (argv[i][2] != '\0') return has_error;
        *first = i + 1;
        return args;
      case '\0': /* '-' */
        return args;
      case 'E':
        if (argv[i][2] != '\0') return has_error;
        args |= has_E;
        break;
      case 'W':
        if (argv[i][2] != '\0') return has_error;
        break;
      case 'i':
        args |= has_i; /* fall through: -i implies -v */
        /* FALLTHROUGH */
      case 'v':
        if (argv[i][2] != '\0') return has_error;
        args |= has_v;
        break;
      case 'e':
        args |= has_e;
        /* FALLTHROUGH */
      case 'l':
        if (argv[i][2] == '\0') {
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') {
            *first = i - 1;
            return has_error;
          }
        }
        break;
      default:
        return has_error;
    }
  }
  *first = i;
  return args;
}

/* Runs -e, -l and -W in order. Returns 0 on an error. */
static int runargs(lua_State *L, char **argv, int n) {
  for (int i = 1; i < n; i++) {
    if (argv[i][0] != '-') continue;
    if (argv[i][1] == '-' && argv[i][2] != '\0') { /* long option */
      for (int k = 0; longopts[k].flag; k++)
        if (strcmp(argv[i], longopts[k].flag) == 0 && longopts[k].takes_value) i++;
      continue;
    }
    int option = argv[i][1];
    switch (option) {
      case 'e':
      case 'l': {
        const char *extra = argv[i] + 2;
        if (*extra == '\0') extra = argv[++i];
        int status;
        if (option == 'e') {
          status = dostring(L, extra, "=(command line)");
        } else {
          /* -l [g=]mod */
          const char *eq = strchr(extra, '=');
          char *global = NULL;
          const char *mod = extra;
          if (eq) {
            global = strndup(extra, (size_t)(eq - extra));
            mod = eq + 1;
          }
          lua_getglobal(L, "require");
          lua_pushstring(L, mod);
          status = docall(L, 1, 1);
          if (status == LUA_OK) {
            lua_setglobal(L, global ? global : mod);
          }
          free(global);
          report(L, status);
        }
        if (status != LUA_OK) return 0;
        break;
      }
      case 'W':
        lua_warning(L, "@on", 0);
        break;
    }
  }
  return 1;
}

/* arg table: script at 0, its arguments at 1.., interpreter and options
 * at negative indices, as lua.c builds it. */
static void createargtable(lua_State *L, char **argv, int argc, int script) {
  if (script == argc) script = 0; /* no script: arg[0] is the program */
  lua_createtable(L, argc - (script + 1), script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int handle_luainit(lua_State *L) {
  const char *name = "=LUA_INIT_5_4";
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=LUA_INIT";
    init = getenv(name + 1);
  }
  if (init == NULL) return LUA_OK;
  if (init[0] == '@') return dochunk(L, luaL_loadfile(L, init + 1));
  return dostring(L, init, name);
}

static int pushargs(lua_State *L) {
  if (lua_getglobal(L, "arg") != LUA_TTABLE) luaL_error(L, "'arg' is not a table");
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  int i;
  for (i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -i);
  return n;
}

static int handle_script(lua_State *L, char **argv) {
  const char *fname = argv[0];
  if (strcmp(fname, "-") == 0 && strcmp(argv[-1], "--") != 0) fname = NULL; /* stdin */
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = pushargs(L);
    status = docall(L, n, 0);
  }
  return report(L, status);
}

/* push_field(L, mod, fn) -> status; pushes require(mod)[fn], or reports
 * the error of the require */
static int push_field(lua_State *L, const char *mod, const char *fn) {
  lua_getglobal(L, "require");
  lua_pushstring(L, mod);
  int status = docall(L, 1, 1);
  if (status != LUA_OK) return report(L, status);
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  return LUA_OK;
}

/* exit_status(L) -> the exit status a command's result on the top chose:
 * an integer as it is, nil or true 0, anything else 1. Pops it. */
static int exit_status(lua_State *L) {
  int code = lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1)
           : (lua_isnil(L, -1) || lua_toboolean(L, -1)) ? 0 : 1;
  lua_pop(L, 1);
  return code;
}

static void push_version(lua_State *L) {
  lua_pushfstring(L, "quan %s (%s, %s)", QUAN_VERSION, LUA_RELEASE, "WeChat Pay APIv3 cash coupons");
}

static void print_version(lua_State *L) {
  push_version(L);
  puts(lua_tostring(L, -1));
  fflush(stdout);
  lua_pop(L, 1);
}

/* run_command(L, argv, argc, &code) -> 1 when argv[0] is one of quan.cli's
 * commands (then *code is its exit status), 0 when it names a script:
 * quan.cli.main(word, {args...}, banner) */
static int run_command(lua_State *L, char **argv, int argc, int *code) {
  *code = 1;
  if (push_field(L, "quan.cli", "main") != LUA_OK) return 1;
  lua_pushstring(L, argv[0]);
  lua_createtable(L, argc - 1, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  push_version(L);
  command_running = 1;
  int status = docall(L, 3, 1);
  command_running = 0;
  if (status != LUA_OK && command_interrupted) { /* Ctrl-C (or a trapped SIGTERM, SIGHUP): said in one line */
    fprintf(stderr, "quan %s: interrupted\n", argv[0]); /* as the commands name themselves */
    fflush(stderr);
    lua_pop(L, 1);
    *code = 128 + (quan_signal_caught ? (int)quan_signal_caught : SIGINT);
    return 1;
  }
  if (status != LUA_OK) return report(L, status), 1;
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  *code = exit_status(L);
  return 1;
}

/* print_commands(L): the commands part of --help, from quan.cli's table */
static void print_commands(lua_State *L) {
  if (push_field(L, "quan.cli", "commands_text") != LUA_OK) return;
  if (report(L, docall(L, 0, 1)) != LUA_OK) return;
  const char *text = lua_tostring(L, -1);
  if (text) fputs(text, stdout);
  fflush(stdout);
  lua_pop(L, 1);
}

static int doREPL(lua_State *L) {
  if (push_field(L, "quan.repl", "main") != LUA_OK) return 1;
  int status = docall(L, 0, 1);
  if (status != LUA_OK) return report(L, status), 1;
  return exit_status(L);
}

/* a word that may be a command: not an option, not a path (no '.', no '/') */
static int command_word(const char *s) {
  return s[0] != '-' && s[0] != '\0' && strpbrk(s, "./") == NULL;
}

/* openlibs(L): the standard libraries and quan's, once */
static void openlibs(lua_State *L, int *open) {
  if (*open) return;
  luaL_openlibs(L);
  quan_openlibs(L);
  lua_gc(L, LUA_GCRESTART);
  /* generational: a request loop makes short-lived garbage. The pause is
   * the wait after a major collection that freed little (the first ones
   * after a script loads its modules): Lua's 200 % doubles the heap before
   * the next look, 130 % holds a client's peak near its live data */
  lua_gc(L, LUA_GCINC, 130, 0, 0);
  lua_gc(L, LUA_GCGEN, 0, 0);
  *open = 1;
}

/* ---- pmain ------------------------------------------------------------- */

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  int *exitcode = (int *)lua_touserdata(L, 3);
  luaL_checkversion(L);

  /* quan's long options may come before the command word too:
   * `quan --profile prod run x.lua` is `quan run --profile prod x.lua` */
  int cmd = 1;
  while (cmd < argc && argv[cmd][0] == '-' && argv[cmd][1] == '-' && argv[cmd][2] != '\0') {
    int used = longopt(argv, cmd);
    if (used <= 0) break;
    cmd += used;
  }
  /* a word that is no option and no path may be a command (quan.cli says);
   * no -E can come before it, so the libraries may open now */
  int libs_open = 0;
  if (cmd < argc && command_word(argv[cmd]) && strcmp(argv[cmd], "run") != 0) {
    openlibs(L, &libs_open);
    if (run_command(L, argv + cmd, argc - cmd, exitcode)) return 0;
  }
  /* `quan run ...` is `quan ...`: the word only reads better in scripts,
   * and it always names one (`quan run -` reads stdin) */
  int first = 1, run = 0;
  if (cmd < argc && strcmp(argv[cmd], "run") == 0) first = cmd + 1, run = 1;

  int script = first;
  int args = collectargs(argv, &script);
  if (args == has_error) {
    print_usage(argv[script]);
    *exitcode = 1;
    return 0;
  }
  if (args == has_bad_value) {
    print_bad_value(argv, script);
    *exitcode = EXIT_USAGE;
    return 0;
  }
  if (args == has_h) {
    print_usage(NULL);
    openlibs(L, &libs_open);
    print_commands(L);
    *exitcode = 0;
    return 0;
  }
  if (args == has_version) {
    print_version(L);
    *exitcode = 0;
    return 0;
  }
  if (run && script == argc && !(args & (has_e | has_i | has_v))) {
    fprintf(stderr, "%s: run: no script given ('-' reads one from stdin)\n"
                    "usage: %s run [options] script [args]\n", progname, progname);
    fflush(stderr);
    *exitcode = EXIT_USAGE;
    return 0;
  }
  if (args & has_E) {
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  }
  openlibs(L, &libs_open);
  createargtable(L, argv, argc, script);
  *exitcode = 1;
  if (args & has_v) print_version(L);
  if (!(args & has_E) && handle_luainit(L) != LUA_OK) return 0;
  if (!runargs(L, argv, script)) return 0;
  if (script < argc && handle_script(L, argv + script) != LUA_OK) return 0;
  if (args & has_i) {
    *exitcode = doREPL(L);
    return 0;
  }
  if (script == argc && !(args & (has_e | has_v))) {
    if (isatty(0)) {
      print_version(L);
      *exitcode = doREPL(L);
      return 0;
    }
    if (dochunk(L, luaL_loadfile(L, NULL)) != LUA_OK) return 0;
  }
  *exitcode = 0;
  return 0;
}

/* What luaL_newstate gives a state, for one made with quan's allocator:
 * a panic message, and Lua's warnings (warn "...") shown only between the
 * control messages "@on" (quan -W) and "@off", the pieces of a continued
 * warning on one line. */
static int panic(lua_State *L) {
  const char *msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
  fprintf(stderr, "%s: PANIC: unprotected error in call to Lua API (%s)\n", progname, msg);
  fflush(stderr);
  return 0; /* Lua aborts */
}

static void warn_shown(void *ud, const char *msg, int tocont);
static void warn_quiet(void *ud, const char *msg, int tocont);

static int warn_control(lua_State *L, const char *msg, int tocont) {
  if (tocont || msg[0] != '@') return 0;
  if (strcmp(msg, "@on") == 0) lua_setwarnf(L, warn_shown, L);
  else if (strcmp(msg, "@off") == 0) lua_setwarnf(L, warn_quiet, L);
  return 1;
}

static void warn_quiet(void *ud, const char *msg, int tocont) {
  warn_control(ud, msg, tocont);
}

static int warn_open; /* a warning's first pieces are out, the rest to come */

static void warn_shown(void *ud, const char *msg, int tocont) {
  if (!warn_open && warn_control(ud, msg, tocont)) return;
  if (!warn_open) fputs("Lua warning: ", stderr);
  fputs(msg, stderr);
  warn_open = tocont;
  if (!tocont) {
    fputc('\n', stderr);
    fflush(stderr);
  }
}

static lua_State *newstate(void) {
  lua_Alloc f = quan_alloc();
  if (f == NULL) return luaL_newstate();
  lua_State *L = lua_newstate(f, NULL);
  if (L) {
    lua_atpanic(L, panic);
    lua_setwarnf(L, warn_quiet, L);
  }
  return L;
}

int main(int argc, char **argv) {
  if (argv[0] && argv[0][0]) progname = argv[0];
  lua_State *L = newstate();
  if (L == NULL) {
    message("cannot create state: not enough memory");
    return EXIT_FAILURE;
  }
  lua_gc(L, LUA_GCSTOP);
  int exitcode = 1;
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushlightuserdata(L, &exitcode);
  int status = lua_pcall(L, 3, 0, 0);
  report(L, status);
  lua_close(L);
  if (status != LUA_OK) return EXIT_FAILURE;
  return exitcode;
}
