/* lsqlite.c: quan.sqlite, a small SQLite binding for the sandbox state and
 * the batch journal. Values are always bound, never interpolated.
 *
 * Errors (docs/sqlite.md, docs/errors.md): the caller's mistakes raise
 * "sqlite: <message>": bad arguments, a value that cannot be bound, SQL that
 * does not compile (SQLite's `error` at prepare time), `misuse`, `range`, a
 * closed database. A statement that compiles but fails to run (a lock, a
 * full disk, a constraint, a damaged file) returns nil, "sqlite: <message>",
 * code, as a failed open does; so do begin and commit of a transaction.
 * Iterators raise every failure, as io.lines does: a generic for cannot take
 * one. db:errcode() names the last failure's code. */
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sqlite3.h>
#include "quan.h"
#include "sonames.h"

/* libsqlite3, opened when this module is first required (quan_library_open,
 * src/quan.h): each name below goes through the address found there. */
#define SQLITE_SYMBOLS_(X) X(sqlite3_bind_double) X(sqlite3_bind_int) X(sqlite3_bind_int64) \
  X(sqlite3_bind_null) X(sqlite3_bind_parameter_count) X(sqlite3_bind_parameter_name) \
  X(sqlite3_bind_text64) X(sqlite3_busy_handler) X(sqlite3_changes64) X(sqlite3_clear_bindings) \
  X(sqlite3_close) X(sqlite3_column_blob) X(sqlite3_column_bytes) X(sqlite3_column_count) \
  X(sqlite3_column_double) X(sqlite3_column_int64) X(sqlite3_column_name) X(sqlite3_column_text) \
  X(sqlite3_column_type) X(sqlite3_config) X(sqlite3_db_filename) X(sqlite3_errmsg) \
  X(sqlite3_errstr) X(sqlite3_exec) X(sqlite3_file_control) X(sqlite3_finalize) X(sqlite3_free) \
  X(sqlite3_get_autocommit) X(sqlite3_initialize) X(sqlite3_last_insert_rowid) X(sqlite3_libversion) \
  X(sqlite3_next_stmt) X(sqlite3_open_v2) X(sqlite3_prepare_v2) X(sqlite3_reset) X(sqlite3_sql) \
  X(sqlite3_step)
QUAN_LIBRARY(sqlite_library, QUAN_SONAME_SQLITE, SQLITE_SYMBOLS_)
#define sqlite3_bind_double (*sqlite3_bind_double_)
#define sqlite3_bind_int (*sqlite3_bind_int_)
#define sqlite3_bind_int64 (*sqlite3_bind_int64_)
#define sqlite3_bind_null (*sqlite3_bind_null_)
#define sqlite3_bind_parameter_count (*sqlite3_bind_parameter_count_)
#define sqlite3_bind_parameter_name (*sqlite3_bind_parameter_name_)
#define sqlite3_bind_text64 (*sqlite3_bind_text64_)
#define sqlite3_busy_handler (*sqlite3_busy_handler_)
#define sqlite3_changes64 (*sqlite3_changes64_)
#define sqlite3_clear_bindings (*sqlite3_clear_bindings_)
#define sqlite3_close (*sqlite3_close_)
#define sqlite3_column_blob (*sqlite3_column_blob_)
#define sqlite3_column_bytes (*sqlite3_column_bytes_)
#define sqlite3_column_count (*sqlite3_column_count_)
#define sqlite3_column_double (*sqlite3_column_double_)
#define sqlite3_column_int64 (*sqlite3_column_int64_)
#define sqlite3_column_name (*sqlite3_column_name_)
#define sqlite3_column_text (*sqlite3_column_text_)
#define sqlite3_column_type (*sqlite3_column_type_)
#define sqlite3_config (*sqlite3_config_)
#define sqlite3_db_filename (*sqlite3_db_filename_)
#define sqlite3_errmsg (*sqlite3_errmsg_)
#define sqlite3_errstr (*sqlite3_errstr_)
#define sqlite3_exec (*sqlite3_exec_)
#define sqlite3_file_control (*sqlite3_file_control_)
#define sqlite3_finalize (*sqlite3_finalize_)
#define sqlite3_free (*sqlite3_free_)
#define sqlite3_get_autocommit (*sqlite3_get_autocommit_)
#define sqlite3_initialize (*sqlite3_initialize_)
#define sqlite3_last_insert_rowid (*sqlite3_last_insert_rowid_)
#define sqlite3_libversion (*sqlite3_libversion_)
#define sqlite3_next_stmt (*sqlite3_next_stmt_)
#define sqlite3_open_v2 (*sqlite3_open_v2_)
#define sqlite3_prepare_v2 (*sqlite3_prepare_v2_)
#define sqlite3_reset (*sqlite3_reset_)
#define sqlite3_sql (*sqlite3_sql_)
#define sqlite3_step (*sqlite3_step_)

#define DB_MT "quan.sqlite.db"
#define STMT_MT "quan.sqlite.stmt"

typedef struct Db {
  sqlite3 *db;
  int closed;
  int lastrc;     /* primary result code of the last failure */
  int timeout_ms; /* busy timeout */
  int process_lock; /* transactions take the process-wide writer lock */
} Db;

/* Writers of one process that opened their db with process_lock = true queue
 * on this mutex around each outer transaction: a blocked thread wakes as soon
 * as the lock is released, instead of polling SQLite's file lock. Process-wide
 * by nature, so a C global. */
static pthread_mutex_t writer_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int writer_depth; /* this thread's holds: nested dbs do not deadlock */

static void writer_enter(void) {
  if (writer_depth++ == 0) pthread_mutex_lock(&writer_lock);
}

static void writer_leave(void) {
  if (--writer_depth == 0) pthread_mutex_unlock(&writer_lock);
}

typedef struct Stmt {
  sqlite3_stmt *st;
  Db *db;     /* kept alive through the userdata's user value */
  int busy;   /* 1 while an iterator or a cached call is using it */
  int cached; /* 1 when owned by the db's statement cache */
} Stmt;

/* Busy handler: short sleeps (50 us growing to 1 ms) until the timeout, so
 * writers in several threads of one process hand the lock over quickly
 * (SQLite's default handler sleeps in steps of up to 100 ms). */
static int on_busy(void *ud, int count) {
  Db *d = ud;
  static _Thread_local struct timespec start;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (count == 0) start = now;
  double waited = (double)(now.tv_sec - start.tv_sec) * 1e3 + (double)(now.tv_nsec - start.tv_nsec) / 1e6;
  if (waited >= d->timeout_ms) return 0;
  long us = count < 20 ? 50 : (count < 100 ? 200 : 1000);
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
  return 1;
}

static const char *rcname(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK: return "ok";
  case SQLITE_BUSY: return "busy";
  case SQLITE_LOCKED: return "locked";
  case SQLITE_CONSTRAINT: return "constraint";
  case SQLITE_NOMEM: return "nomem";
  case SQLITE_READONLY: return "readonly";
  case SQLITE_IOERR: return "ioerr";
  case SQLITE_CORRUPT: return "corrupt";
  case SQLITE_FULL: return "full";
  case SQLITE_CANTOPEN: return "cantopen";
  case SQLITE_MISMATCH: return "mismatch";
  case SQLITE_MISUSE: return "misuse";
  case SQLITE_RANGE: return "range";
  case SQLITE_NOTADB: return "notadb";
  case SQLITE_INTERRUPT: return "interrupt";
  case SQLITE_ABORT: return "abort";
  case SQLITE_TOOBIG: return "toobig";
  default: return "error";
  }
}

/* blames_caller(rc, compiling) -> 1 when the failure rc is a mistake of the
 * program, not of the world: SQL that does not compile, a misuse, a
 * parameter index out of range */
static int blames_caller(int rc, int compiling) {
  int primary = rc & 0xff;
  return (compiling && primary == SQLITE_ERROR) || primary == SQLITE_MISUSE || primary == SQLITE_RANGE;
}

/* [-0, +3] failure(L, d, rc) -> 3: records rc and pushes nil,
 * "sqlite: <message>", code (quan_fail) */
static int failure(lua_State *L, Db *d, int rc) {
  d->lastrc = rc;
  return quan_fail(L, rcname(rc), "sqlite: %s", d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
}

/* Raises "sqlite: <message>" at the caller's line after recording rc. */
static int raise_db(lua_State *L, Db *d, int rc) {
  d->lastrc = rc;
  const char *msg = d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc);
  return luaL_error(L, "sqlite: %s", msg);
}

/* [-3, +0] raises the message of the failure on top (an iterator's way) */
static int raise_failure(lua_State *L) {
  return luaL_error(L, "%s", lua_tostring(L, -2));
}

static Db *checkdb(lua_State *L, int i) {
  Db *d = luaL_checkudata(L, i, DB_MT);
  if (d->closed) luaL_error(L, "sqlite: database is closed");
  return d;
}

static Stmt *checkstmt(lua_State *L, int i) {
  Stmt *s = luaL_checkudata(L, i, STMT_MT);
  if (s->st == NULL || s->db->closed) luaL_error(L, "sqlite: statement is finalized");
  return s;
}

/* ---- binding and reading values ---------------------------------------- */

/* bind_one(L, s, n, i) -> SQLITE_OK or the failure of binding the Lua
 * value at index i to parameter n (nomem, toobig); raises for a value
 * SQLite cannot hold and for the caller's mistakes. */
static int bind_one(lua_State *L, Stmt *s, int n, int i) {
  int rc;
  switch (lua_type(L, i)) {
  case LUA_TNIL: rc = sqlite3_bind_null(s->st, n); break;
  case LUA_TBOOLEAN: rc = sqlite3_bind_int(s->st, n, lua_toboolean(L, i)); break;
  case LUA_TNUMBER:
    if (lua_isinteger(L, i)) rc = sqlite3_bind_int64(s->st, n, lua_tointeger(L, i));
    else rc = sqlite3_bind_double(s->st, n, lua_tonumber(L, i));
    break;
  case LUA_TSTRING: {
    size_t len;
    const char *v = lua_tolstring(L, i, &len);
    rc = sqlite3_bind_text64(s->st, n, v, len, SQLITE_TRANSIENT, SQLITE_UTF8);
    break;
  }
  default:
    return luaL_error(L, "sqlite: cannot bind a %s (parameter %d)", luaL_typename(L, i), n);
  }
  if (rc != SQLITE_OK && blames_caller(rc, 0)) raise_db(L, s->db, rc);
  return rc;
}

/* bind_all(L, s, first) -> SQLITE_OK or bind_one's failure. Binds the
 * values at indexes first..top: a single table binds by name (:name, @name,
 * $name) and by position (t[1], t[2], ...); otherwise the values bind
 * positionally. Bindings are cleared first. */
static int bind_all(lua_State *L, Stmt *s, int first) {
  int top = lua_gettop(L);
  int np = sqlite3_bind_parameter_count(s->st);
  int rc = SQLITE_OK;
  sqlite3_clear_bindings(s->st);
  if (top == first && lua_type(L, first) == LUA_TTABLE) {
    for (int n = 1; n <= np && rc == SQLITE_OK; n++) {
      const char *name = sqlite3_bind_parameter_name(s->st, n);
      if (name && name[0] != '?') lua_getfield(L, first, name + 1);
      else lua_rawgeti(L, first, n);
      rc = bind_one(L, s, n, -1);
      lua_pop(L, 1);
    }
    return rc;
  }
  int nargs = top - first + 1;
  if (nargs < 0) nargs = 0;
  if (nargs > np)
    luaL_error(L, "sqlite: %d values for %d parameters", nargs, np);
  for (int n = 1; n <= nargs && rc == SQLITE_OK; n++) rc = bind_one(L, s, n, first + n - 1);
  return rc;
}

/* Pushes the current row as a table keyed by column name; NULL columns are
 * absent. */
static void push_row(lua_State *L, sqlite3_stmt *st) {
  int nc = sqlite3_column_count(st);
  lua_createtable(L, 0, nc);
  for (int c = 0; c < nc; c++) {
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(st, c)); break;
    case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, c)); break;
    case SQLITE_TEXT:
      lua_pushlstring(L, (const char *)sqlite3_column_text(st, c), (size_t)sqlite3_column_bytes(st, c));
      break;
    case SQLITE_BLOB: {
      const void *b = sqlite3_column_blob(st, c);
      lua_pushlstring(L, b ? b : "", (size_t)sqlite3_column_bytes(st, c));
      break;
    }
    default: continue; /* NULL */
    }
    lua_setfield(L, -2, sqlite3_column_name(st, c));
  }
}

/* step_row(L, s) -> 1 with a row table pushed, 0 when done, or -1 with the
 * failure pushed (nil, message, code; the statement reset). A misuse
 * raises. */
static int step_row(lua_State *L, Stmt *s) {
  int rc = sqlite3_step(s->st);
  if (rc == SQLITE_ROW) {
    push_row(L, s->st);
    return 1;
  }
  if (rc == SQLITE_DONE) return 0;
  sqlite3_reset(s->st);
  s->busy = 0;
  if (blames_caller(rc, 0)) raise_db(L, s->db, rc);
  failure(L, s->db, rc);
  return -1;
}

/* ---- statements --------------------------------------------------------- */

/* new_stmt(L, dbi, d, sql, len) -> a Stmt userdata for sql on the db at
 * index dbi, pushed; or NULL with the failure pushed (nil, message, code)
 * when SQLite cannot compile it for a reason of the world (a lock, a
 * damaged file). SQL that does not compile raises. */
static Stmt *new_stmt(lua_State *L, int dbi, Db *d, const char *sql, size_t len) {
  Stmt *s = lua_newuserdatauv(L, sizeof(Stmt), 1);
  s->st = NULL;
  s->db = d;
  s->busy = 0;
  s->cached = 0;
  luaL_setmetatable(L, STMT_MT);
  lua_pushvalue(L, dbi);
  lua_setiuservalue(L, -2, 1);
  const char *tail = NULL;
  int rc = sqlite3_prepare_v2(d->db, sql, (int)len, &s->st, &tail);
  if (rc != SQLITE_OK && blames_caller(rc, 1)) raise_db(L, d, rc);
  if (rc != SQLITE_OK) {
    lua_pop(L, 1);
    failure(L, d, rc);
    return NULL;
  }
  if (s->st == NULL) luaL_error(L, "sqlite: empty statement");
  if (tail && *tail) {
    while (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == '\r' || *tail == ';') tail++;
    if (*tail) luaL_error(L, "sqlite: prepare takes one statement (use db:exec for several)");
  }
  return s;
}

static void release_stmt(Stmt *s) {
  if (s->st != NULL) {
    if (!s->db->closed) sqlite3_finalize(s->st);
    s->st = NULL;
  }
}

/* Gets the cached statement for sql (preparing it on first use) and pushes
 * it; a statement already in use yields a fresh, uncached one. NULL with the
 * failure pushed as new_stmt. */
static Stmt *cached_stmt(lua_State *L, int dbi, Db *d, int sqli) {
  size_t len;
  const char *sql = luaL_checklstring(L, sqli, &len);
  lua_getiuservalue(L, dbi, 1); /* cache */
  lua_pushvalue(L, sqli);
  if (lua_rawget(L, -2) == LUA_TUSERDATA) {
    Stmt *s = lua_touserdata(L, -1);
    if (!s->busy && s->st != NULL) {
      lua_remove(L, -2);
      sqlite3_reset(s->st);
      return s;
    }
    lua_pop(L, 2);
    return new_stmt(L, dbi, d, sql, len);
  }
  lua_pop(L, 1);
  Stmt *s = new_stmt(L, dbi, d, sql, len); /* cache stmt */
  if (s == NULL) {
    lua_remove(L, -4); /* the cache */
    return NULL;
  }
  s->cached = 1;
  lua_pushvalue(L, sqli);
  lua_pushvalue(L, -2);
  lua_rawset(L, -4);
  lua_remove(L, -2);
  return s;
}

/* stmt:bind(...) -> stmt | nil, message, code */
static int stmt_bind(lua_State *L) {
  Stmt *s = checkstmt(L, 1);
  sqlite3_reset(s->st);
  int rc = bind_all(L, s, 2);
  if (rc != SQLITE_OK) return failure(L, s->db, rc);
  lua_settop(L, 1);
  return 1;
}

/* stmt:step() -> row table | nil when there are no more rows | nil,
 * message, code */
static int stmt_step(lua_State *L) {
  Stmt *s = checkstmt(L, 1);
  int got = step_row(L, s);
  if (got < 0) return 3;
  if (got == 0) lua_pushnil(L);
  return 1;
}

/* stmt:reset() -> stmt (bindings are kept) */
static int stmt_reset(lua_State *L) {
  Stmt *s = checkstmt(L, 1);
  sqlite3_reset(s->st);
  s->busy = 0;
  lua_settop(L, 1);
  return 1;
}

/* stmt:run(...) -> changes | nil, message, code: binds, steps to the end,
 * resets */
static int stmt_run(lua_State *L) {
  Stmt *s = checkstmt(L, 1);
  sqlite3_reset(s->st);
  int rc = bind_all(L, s, 2), got;
  if (rc != SQLITE_OK) return failure(L, s->db, rc);
  while ((got = step_row(L, s)) > 0) lua_pop(L, 1);
  if (got < 0) return 3;
  sqlite3_reset(s->st);
  lua_pushinteger(L, sqlite3_changes64(s->db->db));
  return 1;
}

/* iterator state: upvalue 1 = stmt userdata; raises a failure */
static int rows_next(lua_State *L) {
  Stmt *s = lua_touserdata(L, lua_upvalueindex(1));
  if (s->st == NULL || s->db->closed || !s->busy) return 0;
  int got = step_row(L, s);
  if (got > 0) return 1;
  if (got < 0) return raise_failure(L);
  sqlite3_reset(s->st);
  s->busy = 0;
  return 0;
}

/* closing value of a generic for: resets the statement when the loop ends
 * early (break or error) */
static int rows_close(lua_State *L) {
  Stmt *s = lua_touserdata(L, lua_upvalueindex(1));
  if (s->st != NULL && !s->db->closed) sqlite3_reset(s->st);
  s->busy = 0;
  return 0;
}

/* Pushes the for-loop quadruple (iterator, nil, nil, closer) for the stmt at
 * index si. */
static int push_rows(lua_State *L, int si) {
  Stmt *s = lua_touserdata(L, si);
  s->busy = 1;
  lua_pushvalue(L, si);
  lua_pushcclosure(L, rows_next, 1);
  lua_pushnil(L);
  lua_pushnil(L);
  lua_newtable(L); /* to-be-closed value */
  lua_createtable(L, 0, 1);
  lua_pushvalue(L, si);
  lua_pushcclosure(L, rows_close, 1);
  lua_setfield(L, -2, "__close");
  lua_setmetatable(L, -2);
  return 4;
}

/* stmt:rows(...) -> iterator of row tables (binds the values first);
 * raises a failure */
static int stmt_rows(lua_State *L) {
  Stmt *s = checkstmt(L, 1);
  if (s->busy) return luaL_error(L, "sqlite: statement is already being iterated");
  sqlite3_reset(s->st);
  int rc = bind_all(L, s, 2);
  if (rc != SQLITE_OK) return raise_db(L, s->db, rc);
  return push_rows(L, 1);
}

/* stmt:finalize(); also __gc and __close */
static int stmt_finalize(lua_State *L) {
  Stmt *s = luaL_checkudata(L, 1, STMT_MT);
  release_stmt(s);
  return 0;
}

static int stmt_tostring(lua_State *L) {
  Stmt *s = luaL_checkudata(L, 1, STMT_MT);
  if (s->st == NULL || s->db->closed) lua_pushstring(L, "quan.sqlite.stmt (finalized)");
  else lua_pushfstring(L, "quan.sqlite.stmt (%s)", sqlite3_sql(s->st));
  return 1;
}

/* ---- databases ----------------------------------------------------------- */

/* open(path [, {busy_timeout = ms, wal = true, synchronous = "normal",
 *   readonly = false}]) -> db | nil, message, code. readonly: an existing
 *   file, opened for reading only (no journal mode set, nothing written:
 *   a reader beside a process that writes it) */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int timeout = 5000, wal = 1, plock = 0, readonly = 0;
  const char *sync = "NORMAL";
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "busy_timeout");
    if (!lua_isnil(L, -1)) timeout = (int)luaL_checkinteger(L, -1);
    lua_getfield(L, 2, "wal");
    if (!lua_isnil(L, -1)) wal = lua_toboolean(L, -1);
    lua_getfield(L, 2, "process_lock");
    plock = lua_toboolean(L, -1);
    lua_getfield(L, 2, "readonly");
    readonly = lua_toboolean(L, -1);
    lua_pop(L, 2);
    lua_getfield(L, 2, "synchronous");
    if (!lua_isnil(L, -1)) {
      static const char *const modes[] = {"off", "normal", "full", NULL};
      static const char *const up[] = {"OFF", "NORMAL", "FULL"};
      sync = up[luaL_checkoption(L, -1, NULL, modes)];
    }
    lua_pop(L, 3);
  }
  /* a database is a file (or a folder, which SQLite refuses itself): a
   * fifo would block the open, a device such as /dev/null swallow every
   * write as if it were kept */
  struct stat st;
  if (strcmp(path, ":memory:") != 0 && strncmp(path, "file:", 5) != 0 && stat(path, &st) == 0
      && !S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode))
    return quan_fail(L, "cantopen", "sqlite open %s: a %s, not a database file", path,
      S_ISFIFO(st.st_mode) ? "fifo" : S_ISSOCK(st.st_mode) ? "socket"
      : S_ISCHR(st.st_mode) ? "character device" : "block device");
  Db *d = lua_newuserdatauv(L, sizeof(Db), 1);
  d->db = NULL;
  d->closed = 1;
  d->lastrc = 0;
  luaL_setmetatable(L, DB_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1); /* statement cache */
  int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
  int rc = sqlite3_open_v2(path, &d->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    quan_fail(L, rcname(rc), "sqlite open %s: %s", path, d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
    sqlite3_close(d->db);
    d->db = NULL;
    return 3;
  }
  d->closed = 0;
  d->timeout_ms = timeout;
  d->process_lock = plock;
  sqlite3_busy_handler(d->db, on_busy, d);
  char pragma[96];
  if (readonly) /* the journal mode is the writer's: a reader follows the file's */
    snprintf(pragma, sizeof pragma, "PRAGMA foreign_keys=ON");
  else
    snprintf(pragma, sizeof pragma, "PRAGMA journal_mode=%s; PRAGMA synchronous=%s; PRAGMA foreign_keys=ON",
             wal ? "WAL" : "DELETE", sync);
  char *err = NULL;
  rc = sqlite3_exec(d->db, pragma, NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    quan_fail(L, rcname(rc), "sqlite open %s: %s", path, err ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    sqlite3_close(d->db);
    d->db = NULL;
    d->closed = 1;
    return 3;
  }
  return 1;
}

/* db:exec(sql) -> true | nil, message, code; runs one or more statements,
 * no values, in order: each is compiled, then run (one that does not
 * compile raises; those before it have run) */
static int db_exec(lua_State *L) {
  Db *d = checkdb(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  while (*sql) {
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(d->db, sql, -1, &st, &tail);
    if (rc != SQLITE_OK) {
      if (blames_caller(rc, 1)) return raise_db(L, d, rc);
      return failure(L, d, rc);
    }
    if (st == NULL) break; /* only blanks or comments were left */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
    if (rc != SQLITE_DONE) {
      failure(L, d, rc); /* the message, before finalize */
      sqlite3_finalize(st);
      if (blames_caller(rc, 0)) return raise_failure(L);
      return 3;
    }
    sqlite3_finalize(st);
    sql = tail;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* db:prepare(sql) -> stmt (uncached, yours to finalize or let collect) |
 * nil, message, code */
static int db_prepare(lua_State *L) {
  Db *d = checkdb(L, 1);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  if (new_stmt(L, 1, d, sql, len) == NULL) return 3;
  return 1;
}

/* db:run(sql, ...) -> changes, last_insert_rowid | nil, message, code
 * (cached statement) */
static int db_run(lua_State *L) {
  Db *d = checkdb(L, 1);
  Stmt *s = cached_stmt(L, 1, d, 2);
  if (s == NULL) return 3;
  lua_replace(L, 2); /* stmt in place of the sql */
  int rc = bind_all(L, s, 3), got;
  if (rc != SQLITE_OK) return failure(L, d, rc);
  s->busy = 1;
  while ((got = step_row(L, s)) > 0) lua_pop(L, 1);
  s->busy = 0;
  if (got < 0) return 3;
  sqlite3_reset(s->st);
  lua_pushinteger(L, sqlite3_changes64(d->db));
  lua_pushinteger(L, sqlite3_last_insert_rowid(d->db));
  return 2;
}

/* db:first(sql, ...) -> first row table | nil when there is none | nil,
 * message, code (cached statement) */
static int db_first(lua_State *L) {
  Db *d = checkdb(L, 1);
  Stmt *s = cached_stmt(L, 1, d, 2);
  if (s == NULL) return 3;
  lua_replace(L, 2);
  int rc = bind_all(L, s, 3);
  if (rc != SQLITE_OK) return failure(L, d, rc);
  s->busy = 1;
  int got = step_row(L, s);
  s->busy = 0;
  if (got < 0) return 3;
  sqlite3_reset(s->st);
  if (!got) lua_pushnil(L);
  return 1;
}

/* db:rows(sql, ...) -> iterator of row tables (cached statement); raises a
 * failure */
static int db_rows(lua_State *L) {
  Db *d = checkdb(L, 1);
  Stmt *s = cached_stmt(L, 1, d, 2);
  if (s == NULL) return raise_failure(L);
  lua_replace(L, 2);
  int rc = bind_all(L, s, 3);
  if (rc != SQLITE_OK) return raise_db(L, d, rc);
  return push_rows(L, 2);
}

/* db:transaction(fn, ...) -> fn's results | nil, message, code when the
 * transaction cannot begin or commit (then nothing of fn's is kept).
 * BEGIN IMMEDIATE ... COMMIT at the outer level, a SAVEPOINT inside another
 * transaction; when fn raises, rolls back and re-raises the error value
 * unchanged. */
static int db_transaction(lua_State *L) {
  Db *d = checkdb(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  int nested = !sqlite3_get_autocommit(d->db);
  const char *begin = nested ? "SAVEPOINT quan_tx" : "BEGIN IMMEDIATE";
  int locked = !nested && d->process_lock;
  if (locked) writer_enter();
  int rc = sqlite3_exec(d->db, begin, NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    if (locked) writer_leave();
    return failure(L, d, rc);
  }
  /* stack: db, fn, args...; results replace fn and args */
  int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  if (status != LUA_OK) {
    if (nested) {
      sqlite3_exec(d->db, "ROLLBACK TO quan_tx", NULL, NULL, NULL);
      sqlite3_exec(d->db, "RELEASE quan_tx", NULL, NULL, NULL);
    } else if (!sqlite3_get_autocommit(d->db)) {
      sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (locked) writer_leave();
    return lua_error(L);
  }
  rc = sqlite3_exec(d->db, nested ? "RELEASE quan_tx" : "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    failure(L, d, rc);
    if (nested) {
      sqlite3_exec(d->db, "ROLLBACK TO quan_tx", NULL, NULL, NULL);
      sqlite3_exec(d->db, "RELEASE quan_tx", NULL, NULL, NULL);
    } else if (!sqlite3_get_autocommit(d->db)) {
      sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
    }
    if (locked) writer_leave();
    return 3;
  }
  if (locked) writer_leave();
  return lua_gettop(L) - 1;
}

/* db:sync() -> true | nil, message, code: flushes the database's journal
 * (the WAL file in WAL mode) to disk (the VFS's xSync: fdatasync), so that
 * every transaction this connection has committed survives a power loss
 * even under synchronous = "normal", which syncs only at checkpoints. Takes
 * none of SQLite's locks: connections that commit under the writer lock and
 * sync after it share the disk's flushes (a group commit). Nothing to flush
 * (no journal open) is success. */
static int db_sync(lua_State *L) {
  Db *d = checkdb(L, 1);
  sqlite3_file *f = NULL;
  int rc = sqlite3_file_control(d->db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &f);
  if (rc == SQLITE_OK && f != NULL && f->pMethods != NULL) rc = f->pMethods->xSync(f, SQLITE_SYNC_NORMAL);
  if (rc != SQLITE_OK) {
    d->lastrc = rc;
    return quan_fail(L, rcname(rc), "sqlite: sync: %s", sqlite3_errstr(rc));
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* db:changes() -> rows changed by the last statement */
static int db_changes(lua_State *L) {
  Db *d = checkdb(L, 1);
  lua_pushinteger(L, sqlite3_changes64(d->db));
  return 1;
}

/* db:last_insert_rowid() -> integer */
static int db_last_insert_rowid(lua_State *L) {
  Db *d = checkdb(L, 1);
  lua_pushinteger(L, sqlite3_last_insert_rowid(d->db));
  return 1;
}

/* db:errcode() -> primary result code name of the last failure ("busy",
 * "constraint", ...) or "ok" */
static int db_errcode(lua_State *L) {
  Db *d = luaL_checkudata(L, 1, DB_MT);
  lua_pushstring(L, rcname(d->lastrc));
  return 1;
}

/* db:in_transaction() -> boolean */
static int db_in_transaction(lua_State *L) {
  Db *d = checkdb(L, 1);
  lua_pushboolean(L, !sqlite3_get_autocommit(d->db));
  return 1;
}

/* db:close(); also __gc and __close. Finalizes every statement (cached or
 * not) first; later use of them raises. Idempotent. */
static int db_close(lua_State *L) {
  Db *d = luaL_checkudata(L, 1, DB_MT);
  if (!d->closed && d->db) {
    sqlite3_stmt *st;
    while ((st = sqlite3_next_stmt(d->db, NULL)) != NULL) sqlite3_finalize(st);
    sqlite3_close(d->db);
  }
  d->db = NULL;
  d->closed = 1;
  return 0;
}

static int db_tostring(lua_State *L) {
  Db *d = luaL_checkudata(L, 1, DB_MT);
  if (d->closed) lua_pushstring(L, "quan.sqlite.db (closed)");
  else lua_pushfstring(L, "quan.sqlite.db (%s)", sqlite3_db_filename(d->db, "main"));
  return 1;
}

/* check(...) -> ...: a call's results passed through, unless they are a
 * failure (nil, message, code: two strings), raised as its message at the
 * caller's line. nil alone (no row), or what a transaction's fn returned
 * (nil, an error table), passes. Inside db:transaction(fn), how fn gives up. */
static int l_check(lua_State *L) {
  if (lua_isnil(L, 1) && lua_type(L, 2) == LUA_TSTRING && lua_type(L, 3) == LUA_TSTRING)
    return luaL_error(L, "%s", lua_tostring(L, 2));
  return lua_gettop(L);
}

/* version() -> SQLite library version string */
static int l_version(lua_State *L) {
  lua_pushstring(L, sqlite3_libversion());
  return 1;
}

static const luaL_Reg db_methods[] = {
  {"exec", db_exec},
  {"prepare", db_prepare},
  {"run", db_run},
  {"first", db_first},
  {"rows", db_rows},
  {"transaction", db_transaction},
  {"changes", db_changes},
  {"last_insert_rowid", db_last_insert_rowid},
  {"errcode", db_errcode},
  {"in_transaction", db_in_transaction},
  {"sync", db_sync},
  {"close", db_close},
  {NULL, NULL}
};

static const luaL_Reg stmt_methods[] = {
  {"bind", stmt_bind},
  {"step", stmt_step},
  {"reset", stmt_reset},
  {"run", stmt_run},
  {"rows", stmt_rows},
  {"finalize", stmt_finalize},
  {NULL, NULL}
};

static const luaL_Reg funcs[] = {
  {"open", l_open},
  {"check", l_check},
  {"version", l_version},
  {NULL, NULL}
};

static void newmeta(lua_State *L, const char *name, const luaL_Reg *methods,
                    lua_CFunction release, lua_CFunction tostring) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, release);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, release);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
}

/* Once per process, before SQLite is used: no global memory statistics,
 * whose mutex every allocation of every thread would take. */
static pthread_once_t configured = PTHREAD_ONCE_INIT;
static void configure(void) {
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  sqlite3_initialize();
}

int luaopen_quan_sqlite(lua_State *L) {
  quan_library_open(L, &sqlite_library);
  pthread_once(&configured, configure);
  newmeta(L, DB_MT, db_methods, db_close, db_tostring);
  newmeta(L, STMT_MT, stmt_methods, stmt_finalize, stmt_tostring);
  luaL_newlib(L, funcs);
  return 1;
}
