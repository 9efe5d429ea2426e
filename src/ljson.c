/* ljson.c: quan.json, the fast paths of wechatpay.json's encoder and of the
 * request validator (wechatpay.favor.validate).
 *
 * encode(v) -> text | nil
 *   The JSON text wechatpay.json.encode writes for v (object keys in sorted
 *   order, integral numbers in full, strings escaped as cjson 2.1.0 escapes
 *   them), or nil when v holds anything outside the plain subset: a table
 *   with a metatable, an object with a non-string key or more than 64 keys, an
 *   array with holes, a string that is not valid UTF-8, a float that is not
 *   integral, a non-JSON value, nesting deeper than 100. On nil the caller uses its Lua encoder, which also
 *   names the field of any error. Never raises for a bad value.
 *
 * shape(description) -> check
 *   A schema tree, described by the validator (see shape_node below),
 *   compiled once into C nodes. check(v) -> true when v surely passes every
 *   test the validator's generated walk makes (types, required fields, no
 *   unknown field, limits, lengths, enums; a pattern or a format through the
 *   Lua predicate the description gives), false on any doubt: the walk then
 *   runs and says what is wrong. Raises only what a predicate raises.
 *   check(v, true) -> the same, and the text encode writes of a v it passes,
 *   written in the same walk (nil where it cannot be: see writing below).
 *
 * The text is built in a buffer on the C stack; one that outgrows it is
 * built again in a malloc'd one a userdata box owns (freed by __gc if a memory
 * error unwinds). */
#include <stdio.h>
#include <stdlib.h>
#include <locale.h>
#include <string.h>
#include "quan.h"

#define BOX_MT "quan.json.buffer"
#define SHAPE_MT "quan.json.shape"
#define MAX_DEPTH 100
#define MAX_KEYS 64

typedef struct Out {
  char *p;
  size_t len, cap;
  int heap;  /* p is malloc'd (else the caller's buffer on the C stack) */
  int fixed; /* p may not grow: reserve fails and sets full */
  int full;
  int bytewise; /* the collation is C's: keys compare as strcmp compares */
  int off;      /* a shape check stopped writing: it cannot write a value */
  char *spare;  /* a shape check's room (cap bytes) to reorder members in */
} Out;

/* escape[c]: what cjson writes for byte c, NULL when written as itself */
static const char *const escape[128] = {
  "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
  "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f",
  "\\u0010", "\\u0011", "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017",
  "\\u0018", "\\u0019", "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
  NULL, NULL, "\\\"", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "\\/",
  [92] = "\\\\", [127] = "\\u007f",
};

/* Makes room for n more bytes; 0 when out of memory. */
static int reserve(Out *o, size_t n) {
  if (o->len + n <= o->cap) return 1;
  if (o->fixed) {
    o->full = 1;
    return 0;
  }
  size_t cap = o->cap ? o->cap : 1024;
  while (cap < o->len + n) cap *= 2;
  char *q = o->heap ? realloc(o->p, cap) : malloc(cap);
  if (q == NULL) return 0;
  if (!o->heap && o->len > 0) memcpy(q, o->p, o->len);
  o->p = q;
  o->cap = cap;
  o->heap = 1;
  return 1;
}

/* Appends n bytes; 0 when out of memory. */
static int put(Out *o, const char *p, size_t n) {
  if (n == 0) return 1;
  if (!reserve(o, n)) return 0;
  memcpy(o->p + o->len, p, n);
  o->len += n;
  return 1;
}

/* Appends one byte; 0 when out of memory. */
static int put_char(Out *o, char c) {
  if (o->len == o->cap && !reserve(o, 1)) return 0;
  o->p[o->len++] = c;
  return 1;
}

/* Length of the UTF-8 sequence at s[i] (of n bytes), whose first byte c is
 * >= 0x80; 0 when it is not valid UTF-8 as utf8.len decides it: no
 * overlong forms, no surrogates, nothing past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t i, size_t n, unsigned char c) {
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0; /* overlong */
    if (c == 0xED) hi = 0x9F; /* surrogates */
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90; /* overlong */
    if (c == 0xF4) hi = 0x8F; /* past U+10FFFF */
  } else return 0;
  if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return 0;
  for (size_t k = 2; k < len; k++)
    if ((s[i + k] & 0xC0) != 0x80) return 0;
  return len;
}

/* PLAIN[c]: byte c is written as itself, printable ASCII but what cjson
 * escapes (escape above has an entry for every other byte below 0x80) */
static const unsigned char PLAIN[256] = {
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
};

/* Appends s as a JSON string literal; 0 when s is not valid UTF-8 (the Lua
 * encoder names it) or out of memory. Room for every byte once is made
 * first, more at each escape; runs of plain bytes are copied whole. */
static int put_string(Out *o, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  if (n > (size_t)-1 / 2 || !reserve(o, n + 2)) return 0;
  o->p[o->len++] = '"';
  size_t i = 0;
  while (i < n) {
    size_t run = i;
    while (run < n && PLAIN[u[run]]) run++;
    memcpy(o->p + o->len, s + i, run - i);
    o->len += run - i;
    i = run;
    if (i == n) break;
    unsigned char c = u[i];
    if (c >= 128) {
      size_t len = utf8_seq(u, i, n, c);
      if (len == 0) return 0;
      memcpy(o->p + o->len, s + i, len);
      o->len += len;
      i += len;
      continue;
    }
    const char *e = escape[c];
    size_t elen = strlen(e);
    if (!reserve(o, elen + (n - i - 1) + 1)) return 0; /* the escape, the rest once, the quote */
    memcpy(o->p + o->len, e, elen);
    o->len += elen;
    i++;
  }
  o->p[o->len++] = '"';
  return 1;
}

typedef struct Key {
  const char *s;
  size_t n;
  int value; /* stack index of the key's value */
} Key;

static int encode(lua_State *L, int idx, Out *o, int depth);

/* Appends the number at idx: an integer, or a float with an integral
 * value written as one (1000.0 -> 1000); 0 for any other float (the Lua
 * encoder writes it) or when out of memory. */
static int put_number(lua_State *L, int idx, Out *o) {
  int isint;
  lua_Integer i = lua_tointegerx(L, idx, &isint);
  if (!isint) return 0;
  char tmp[24], *p = tmp + sizeof tmp; /* the digits, backwards */
  lua_Unsigned u = i < 0 ? 0 - (lua_Unsigned)i : (lua_Unsigned)i;
  do *--p = (char)('0' + u % 10); while ((u /= 10) != 0);
  if (i < 0) *--p = '-';
  return put(o, p, (size_t)(tmp + sizeof tmp - p));
}

/* The collation of Lua's < on strings is C's: keys sort as strcmp sorts. */
static int collation_is_c(void) {
  const char *collate = setlocale(LC_COLLATE, NULL); /* Lua's os.setlocale may change it */
  return collate && (strcmp(collate, "C") == 0 || strcmp(collate, "POSIX") == 0);
}

/* The object at idx with only string keys, in sorted order: strcoll, as
 * Lua's < on strings without embedded zeros (strcmp under the C locale's
 * collation, where it orders the same and costs less). Each value is left
 * on the stack as lua_next gives it (below the key it iterates with), so no
 * key is looked up twice. */
static int encode_object(lua_State *L, int idx, Out *o, int depth) {
  Key keys[MAX_KEYS];
  int nk = 0, base = lua_gettop(L);
  if (!lua_checkstack(L, MAX_KEYS + 2)) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {            /* [values..., key, value] */
    if (lua_type(L, -2) != LUA_TSTRING || nk == MAX_KEYS) {
      lua_settop(L, base);
      return 0;
    }
    lua_insert(L, -2);                  /* [values..., value, key] */
    Key k;
    k.s = lua_tolstring(L, -1, &k.n);   /* alive: the table holds it */
    k.value = lua_gettop(L) - 1;
    if (strlen(k.s) != k.n) {
      lua_settop(L, base);
      return 0;
    }
    int j = nk++;
    while (j > 0 && (o->bytewise ? strcmp(keys[j - 1].s, k.s) : strcoll(keys[j - 1].s, k.s)) > 0) {
      keys[j] = keys[j - 1];
      j--;
    }
    keys[j] = k;
  }
  int ok = 1;
  if (nk == 0) ok = put(o, "{}", 2);
  for (int i = 0; ok && i < nk; i++)
    ok = put_char(o, i == 0 ? '{' : ',') && put_string(o, keys[i].s, keys[i].n) && put_char(o, ':') &&
         encode(L, keys[i].value, o, depth + 1);
  lua_settop(L, base);
  return ok && (nk == 0 || put_char(o, '}'));
}

/* The table at idx: an array when its keys are exactly 1..n, an object
 * when they are not all positive integers (wechatpay.json's rule); an array
 * with holes is the Lua encoder's to refuse. */
static int encode_table(lua_State *L, int idx, Out *o, int depth) {
  if (depth > MAX_DEPTH || !lua_checkstack(L, 4)) return 0;
  if (lua_getmetatable(L, idx)) { /* a node of the client, or anything else */
    lua_pop(L, 1);
    return 0;
  }
  lua_Integer max = 0, items = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
      lua_pop(L, 1);
      return encode_object(L, idx, o, depth);
    }
    lua_Integer k = lua_tointeger(L, -1);
    if (k > max) max = k;
    items++;
  }
  if (items == 0) return put(o, "{}", 2);
  if (max > items) return 0; /* holes: the Lua encoder says where */
  for (lua_Integer i = 1; i <= max; i++) {
    if (!put_char(o, i == 1 ? '[' : ',')) return 0;
    lua_rawgeti(L, idx, i);
    int ok = encode(L, lua_gettop(L), o, depth + 1);
    lua_pop(L, 1);
    if (!ok) return 0;
  }
  return put_char(o, ']');
}

/* Appends the value at idx; 0 when outside the subset (or out of memory). */
static int encode(lua_State *L, int idx, Out *o, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return put_string(o, s, n);
  }
  case LUA_TNUMBER:
    return put_number(L, idx, o);
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? put(o, "true", 4) : put(o, "false", 5);
  case LUA_TLIGHTUSERDATA: /* cjson.null */
    return lua_touserdata(L, idx) == NULL && put(o, "null", 4);
  case LUA_TTABLE:
    return encode_table(L, idx, o, depth);
  default:
    return 0;
  }
}

static int box_gc(lua_State *L) {
  Out *o = luaL_checkudata(L, 1, BOX_MT);
  if (o->heap) free(o->p);
  o->p = NULL;
  o->heap = 0;
  return 0;
}

/* encode(v) -> text | nil: written on the C stack (a request's body fits),
 * or when it does not, again into a malloc'd buffer a userdata box owns */
static int json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  int bytewise = collation_is_c();
  char first[4096];
  Out stack = {.p = first, .cap = sizeof first, .fixed = 1, .bytewise = bytewise};
  int ok = encode(L, 1, &stack, 1);
  if (ok || !stack.full) {
    if (ok) lua_pushlstring(L, stack.p, stack.len);
    else lua_pushnil(L);
    return 1;
  }
  lua_settop(L, 1);
  Out *o = lua_newuserdatauv(L, sizeof *o, 0); /* the box, at 2 */
  memset(o, 0, sizeof *o);
  o->bytewise = bytewise;
  luaL_setmetatable(L, BOX_MT);
  if (encode(L, 1, o, 1)) lua_pushlstring(L, o->p, o->len);
  else lua_pushnil(L);
  if (o->heap) free(o->p);
  o->p = NULL;
  o->heap = 0;
  return 1;
}

/* ---- shape: the validator's fast path ------------------------------------ */

enum { S_BOOLEAN, S_NUMBER, S_INTEGER, S_STRING, S_ENUM, S_ARRAY, S_OBJECT };

typedef struct Shape Shape;

typedef struct Field {
  const char *name;     /* the name, a string kept in the uservalues (Lua */
  size_t len;           /* strings do not move): a short one is interned, */
  int required;         /* so a key equal to it is the same pointer */
  int rank;             /* the name's place among its siblings' (strcmp) */
  const char *member;   /* '"name":' as the encoder writes it; NULL when a */
  size_t member_len;    /* byte is not PLAIN (put_string escapes or checks it) */
  Shape *node;
} Field;

/* One schema node. It and everything it points to are userdata and
 * strings held by the check's uservalue table, as are the Lua values a
 * check compares with (bounds, enum sets, predicates), kept there at the
 * indices below (0: none): the collector owns all of it. */
struct Shape {
  int kind;
  int min, max;                 /* numbers: the bounds */
  int int_min, int_max;         /* ... that are integers, also held here: */
  lua_Integer imin, imax;       /* an integer compares without the Lua API */
  int set;                      /* enums: the set of accepted values */
  lua_Integer min_len, max_len; /* strings: characters (-1: none) */
  lua_Integer cjk, ascii;       /* strings: the width limit (cjk 0: none) */
  const char *forbid;           /* strings: 256 flags, bytes that must not occur */
  int predicate;                /* strings: pattern and format, a Lua function */
  int passed;                   /* the last string the predicate passed (false: none) */
  lua_Integer min_items, max_items; /* arrays (-1: none) */
  int unique;
  Shape *item;
  int nfields, nrequired;       /* objects */
  Field *fields;
};

typedef struct Check {
  Shape *root;
} Check;

/* keep(L, idx, uv) -> the index of the value at idx appended to the table
 * at uv (0 when it is nil) */
static int keep(lua_State *L, int idx, int uv) {
  if (lua_isnil(L, idx)) return 0;
  int i = (int)lua_rawlen(L, uv) + 1;
  lua_pushvalue(L, idx);
  lua_rawseti(L, uv, i);
  return i;
}

/* hold(L, uv, size) -> zeroed memory of a new userdata kept in uv */
static void *hold(lua_State *L, int uv, size_t size) {
  void *p = lua_newuserdatauv(L, size, 0);
  memset(p, 0, size);
  keep(L, -1, uv);
  lua_pop(L, 1);
  return p;
}

/* member_text(L, uv, name, len, &n) -> '"name":', the opening of a member
 * as put_string and put_char write it, held by the check; NULL when a byte
 * of name is not written as itself */
static const char *member_text(lua_State *L, int uv, const char *name, size_t len, size_t *n) {
  for (size_t i = 0; i < len; i++)
    if (!PLAIN[(unsigned char)name[i]]) return NULL;
  char *t = hold(L, uv, len + 3);
  t[0] = '"';
  memcpy(t + 1, name, len);
  t[len + 1] = '"';
  t[len + 2] = ':';
  *n = len + 3;
  return t;
}

static lua_Integer int_field(lua_State *L, int idx, const char *k, lua_Integer none) {
  lua_getfield(L, idx, k);
  lua_Integer v = lua_isnil(L, -1) ? none : luaL_checkinteger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* shape_node(description at idx, uservalues at uv) -> node; raises on a
 * description the validator would never write. A description is
 *   {kind = "boolean"}
 *   {kind = "integer" | "number", min =, max =, enum = set}
 *   {kind = "string", enum = set}
 *   {kind = "string", min_len =, max_len =, cjk =, ascii =, forbid = "bytes",
 *    predicate = function}: predicate(s) -> truthy when s passes, a
 *    function of s alone (the last string it passed is not asked again)
 *   {kind = "array", min_items =, max_items =, unique = bool, item = description}
 *   {kind = "object", fields = {{name =, required = bool, node = description}, ...}} */
static Shape *shape_node(lua_State *L, int idx, int uv) {
  static const char *const kinds[] = {"boolean", "number", "integer", "string", "enum", "array", "object", NULL};
  luaL_checktype(L, idx, LUA_TTABLE);
  luaL_checkstack(L, 10, "shape: nested too deep"); /* 7 fields read, then hold's and keep's 2 */
  Shape *n = hold(L, uv, sizeof *n);
  lua_getfield(L, idx, "kind");
  n->kind = luaL_checkoption(L, -1, NULL, kinds);
  lua_getfield(L, idx, "enum");
  n->set = keep(L, -1, uv);
  if (n->kind == S_STRING && n->set) n->kind = S_ENUM;
  lua_getfield(L, idx, "min");
  n->min = keep(L, -1, uv);
  n->int_min = lua_isinteger(L, -1);
  n->imin = lua_tointeger(L, -1);
  lua_getfield(L, idx, "max");
  n->max = keep(L, -1, uv);
  n->int_max = lua_isinteger(L, -1);
  n->imax = lua_tointeger(L, -1);
  lua_getfield(L, idx, "unique");
  n->unique = lua_toboolean(L, -1);
  lua_getfield(L, idx, "predicate");
  n->predicate = keep(L, -1, uv);
  if (n->predicate) {
    lua_pushboolean(L, 0);
    n->passed = keep(L, -1, uv);
    lua_pop(L, 1);
  }
  lua_getfield(L, idx, "forbid");
  if (!lua_isnil(L, -1)) {
    size_t len;
    const char *f = luaL_checklstring(L, -1, &len);
    char *flags = hold(L, uv, 256);
    for (size_t i = 0; i < len; i++) flags[(unsigned char)f[i]] = 1;
    n->forbid = flags;
  }
  lua_pop(L, 7);
  n->min_len = int_field(L, idx, "min_len", -1);
  n->max_len = int_field(L, idx, "max_len", -1);
  n->cjk = int_field(L, idx, "cjk", 0);
  n->ascii = int_field(L, idx, "ascii", 0);
  n->min_items = int_field(L, idx, "min_items", -1);
  n->max_items = int_field(L, idx, "max_items", -1);
  if (n->kind == S_ARRAY) {
    lua_getfield(L, idx, "item");
    n->item = shape_node(L, lua_gettop(L), uv);
    lua_pop(L, 1);
  }
  if (n->kind == S_OBJECT) {
    lua_getfield(L, idx, "fields");
    int fi = lua_gettop(L);
    luaL_checktype(L, fi, LUA_TTABLE);
    int count = (int)lua_rawlen(L, fi);
    n->fields = hold(L, uv, ((size_t)count + 1) * sizeof *n->fields);
    for (int i = 1; i <= count; i++, n->nfields++) {
      Field *f = &n->fields[i - 1];
      lua_rawgeti(L, fi, i);
      lua_getfield(L, -1, "name");
      luaL_checktype(L, -1, LUA_TSTRING);
      keep(L, -1, uv);
      f->name = lua_tolstring(L, -1, &f->len);
      f->member = member_text(L, uv, f->name, f->len, &f->member_len);
      lua_getfield(L, -2, "required");
      f->required = lua_toboolean(L, -1);
      n->nrequired += f->required;
      lua_getfield(L, -3, "node");
      f->node = shape_node(L, lua_gettop(L), uv);
      lua_pop(L, 4);
    }
    for (int i = 0; i < n->nfields; i++)
      for (int j = 0; j < n->nfields; j++)
        n->fields[i].rank += strcmp(n->fields[j].name, n->fields[i].name) < 0;
    lua_pop(L, 1);
  }
  return n;
}

/* bound(L, x, uv, at, op, low) -> bound op x (low) or x op bound, for the
 * bound kept at uv[at]; 1 without a bound */
static int bound(lua_State *L, int x, int uv, int at, int op, int low) {
  if (at == 0) return 1;
  lua_rawgeti(L, uv, at);
  int ok = low ? lua_compare(L, -1, x, op) : lua_compare(L, x, -1, op);
  lua_pop(L, 1);
  return ok;
}

/* within(L, n, x, uv) -> min <= x <= max for the bounds of n (none: no
 * limit); an integer bound of an integer x compares in C */
static int within(lua_State *L, Shape *n, int x, int uv) {
  if (!lua_isinteger(L, x)) return bound(L, x, uv, n->min, LUA_OPLE, 1) && bound(L, x, uv, n->max, LUA_OPLE, 0);
  lua_Integer i = lua_tointeger(L, x);
  return (n->int_min ? n->imin <= i : bound(L, x, uv, n->min, LUA_OPLE, 1)) &&
         (n->int_max ? i <= n->imax : bound(L, x, uv, n->max, LUA_OPLE, 0));
}

/* in_set(L, x, uv, set) -> set[x] == true */
static int in_set(lua_State *L, int x, int uv, int set) {
  lua_rawgeti(L, uv, set);
  lua_pushvalue(L, x);
  lua_rawget(L, -2);
  int ok = lua_type(L, -1) == LUA_TBOOLEAN && lua_toboolean(L, -1);
  lua_pop(L, 2);
  return ok;
}

/* utf8_length(s, n) -> characters as utf8.len counts them, -1 when s is
 * not valid UTF-8; *ascii: the bytes below 0x80 */
static lua_Integer utf8_length(const char *s, size_t n, lua_Integer *ascii) {
  lua_Integer chars = 0, narrow = 0;
  for (size_t i = 0; i < n; chars++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x80) { i++; narrow++; continue; }
    size_t len = utf8_seq((const unsigned char *)s, i, n, c);
    if (len == 0) return -1;
    i += len;
  }
  *ascii = narrow;
  return chars;
}

/* ---- the text a check writes -------------------------------------------- */

/* A check asked for the text writes the value as it walks it, as encode
 * writes it: o is NULL when no text is asked, or once it cannot be written
 * (o->off: a float that is not integral, bytes that are not UTF-8, more than
 * MAX_KEYS members, a text longer than the buffer), while the check goes on. */
static Out *writing(Out *o) {
  return o && !o->off ? o : NULL;
}

static void put_scalar(lua_State *L, int x, Out *o) {
  if (!writing(o)) return;
  size_t n;
  const char *s;
  int ok = 0;
  switch (lua_type(L, x)) {
  case LUA_TSTRING:
    s = lua_tolstring(L, x, &n);
    ok = put_string(o, s, n);
    break;
  case LUA_TNUMBER:
    ok = put_number(L, x, o);
    break;
  case LUA_TBOOLEAN:
    ok = lua_toboolean(L, x) ? put(o, "true", 4) : put(o, "false", 5);
    break;
  }
  if (!ok) o->off = 1;
}

static void put_mark(Out *o, char c) {
  if (writing(o) && !put_char(o, c)) o->off = 1;
}

/* One member of an object as the walk wrote it: "name":value at o->p[at]. */
typedef struct Member {
  int rank;
  size_t at, len;
} Member;

/* The members written from o->p[start] in the order the walk met them,
 * written again in their fields' order (the names sorted as strcmp sorts
 * them: encode's order under C's collation) and comma-separated, by way of
 * o->spare. */
static void order_members(Out *o, size_t start, Member *m, int nm) {
  for (int i = 1; i < nm; i++)
    for (int j = i; j > 0 && m[j - 1].rank > m[j].rank; j--) {
      Member t = m[j];
      m[j] = m[j - 1];
      m[j - 1] = t;
    }
  size_t len = o->len - start + (nm > 1 ? (size_t)nm - 1 : 0);
  if (start + len > o->cap) {
    o->off = 1;
    return;
  }
  char *w = o->spare;
  for (int i = 0; i < nm; i++) {
    if (i > 0) *w++ = ',';
    memcpy(w, o->p + m[i].at, m[i].len);
    w += m[i].len;
  }
  memcpy(o->p + start, o->spare, len);
  o->len = start + len;
}

static int shape_check(lua_State *L, Shape *n, int x, int uv, Out *o, int depth);

/* the string at x: the generated walk's test of a plain string node */
static int check_string(lua_State *L, Shape *n, int x, int uv) {
  if (lua_type(L, x) != LUA_TSTRING) return 0;
  size_t len;
  const char *s = lua_tolstring(L, x, &len);
  lua_Integer chars = (lua_Integer)len, narrow = 0;
  int width = n->cjk > 0;
  if (width || n->min_len > 1 || (n->max_len >= 0 && (lua_Integer)len > n->max_len)) {
    chars = utf8_length(s, len, &narrow);
    if (chars < 0) return 0;
  }
  if (n->min_len > 1 ? chars < n->min_len : (n->min_len == 1 && len == 0)) return 0;
  if (n->max_len >= 0 && chars > n->max_len) return 0;
  if (width && (chars == (lua_Integer)len ? chars > n->ascii
                : (chars - narrow) * n->ascii + narrow * n->cjk > n->cjk * n->ascii)) return 0;
  if (n->forbid)
    for (size_t i = 0; i < len; i++)
      if (n->forbid[(unsigned char)s[i]]) return 0;
  if (n->predicate) {
    /* a predicate is a function of the string alone: the one it passed
     * last (a request's times, an id sent again and again) passes again */
    lua_rawgeti(L, uv, n->passed);
    int again = lua_rawequal(L, -1, x);
    lua_pop(L, 1);
    if (again) return 1;
    lua_rawgeti(L, uv, n->predicate);
    lua_pushvalue(L, x);
    lua_call(L, 1, 1);
    int ok = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!ok) return 0;
    lua_pushvalue(L, x);
    lua_rawseti(L, uv, n->passed);
  }
  return 1;
}

/* a plain table: no metatable (an __index or __len would answer for it) */
static int plain_table(lua_State *L, int x) {
  if (lua_type(L, x) != LUA_TTABLE) return 0;
  if (lua_getmetatable(L, x)) {
    lua_pop(L, 1);
    return 0;
  }
  return 1;
}

/* sequence_length(t at x) -> n when the keys of t are exactly 1..n, as
 * encode counts them (every key, wherever the table keeps it), else -1 */
static lua_Integer sequence_length(lua_State *L, int x) {
  lua_Integer len = (lua_Integer)lua_rawlen(L, x), items = 0;
  lua_pushnil(L);
  while (lua_next(L, x)) {
    lua_pop(L, 1);
    lua_Integer k = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : 0;
    if (k < 1 || k > len) {
      lua_pop(L, 1);
      return -1;
    }
    items++;
  }
  return items == len ? len : -1;
}

static int check_array(lua_State *L, Shape *n, int x, int uv, Out *o, int depth) {
  if (!plain_table(L, x) || !lua_checkstack(L, 4)) return 0;
  lua_Integer len = sequence_length(L, x);
  if (len <= 0) return 0; /* sent as {}, or not a sequence: the walk says so */
  if ((n->min_items >= 0 && len < n->min_items) || (n->max_items >= 0 && len > n->max_items)) return 0;
  if (n->unique && len > 64) return 0;
  /* the elements stay on the stack while a unique array is checked */
  if (n->unique && !lua_checkstack(L, (int)len + 4)) return 0;
  int base = lua_gettop(L);
  put_mark(o, '[');
  for (lua_Integer i = 1; i <= len; i++) {
    if (i > 1) put_mark(o, ',');
    lua_rawgeti(L, x, i);
    int e = lua_gettop(L);
    int ok = shape_check(L, n->item, e, uv, o, depth + 1);
    for (int j = base + 1; ok && n->unique && j < e; j++) ok = !lua_rawequal(L, j, e);
    if (!n->unique) lua_pop(L, 1);
    if (!ok) {
      lua_settop(L, base);
      return 0;
    }
  }
  lua_settop(L, base);
  put_mark(o, ']');
  return 1;
}

/* field(n, key at k) -> the field of n the string key names, NULL for
 * none: the same string object first (an interned name), then the bytes */
static Field *field(lua_State *L, Shape *n, int k) {
  size_t len;
  const char *s = lua_tolstring(L, k, &len);
  for (int i = 0; i < n->nfields; i++)
    if (n->fields[i].name == s) return &n->fields[i];
  for (int i = 0; i < n->nfields; i++)
    if (n->fields[i].len == len && memcmp(n->fields[i].name, s, len) == 0) return &n->fields[i];
  return NULL;
}

/* Every key a field of n and its value passing, every required field
 * there. The keys the table has are read, not the fields the node has:
 * most optional fields of a schema are absent. */
static int check_object(lua_State *L, Shape *n, int x, int uv, Out *o, int depth) {
  if (!plain_table(L, x) || !lua_checkstack(L, 4)) return 0;
  int required = 0, nm = 0;
  Member m[MAX_KEYS];
  put_mark(o, '{');
  size_t start = o ? o->len : 0;
  lua_pushnil(L);
  while (lua_next(L, x)) { /* [key, value] */
    Field *f = lua_type(L, -2) == LUA_TSTRING ? field(L, n, lua_gettop(L) - 1) : NULL;
    if (f == NULL) {
      lua_pop(L, 2);
      return 0;
    }
    size_t at = o ? o->len : 0;
    if (writing(o) && (nm == MAX_KEYS || !(f->member ? put(o, f->member, f->member_len)
                                                     : put_string(o, f->name, f->len) && put_char(o, ':'))))
      o->off = 1;
    if (!shape_check(L, f->node, lua_gettop(L), uv, o, depth + 1)) {
      lua_pop(L, 2);
      return 0;
    }
    if (writing(o)) m[nm++] = (Member){f->rank, at, o->len - at};
    required += f->required;
    lua_pop(L, 1);
  }
  if (required != n->nrequired) return 0;
  if (writing(o)) order_members(o, start, m, nm);
  put_mark(o, '}');
  return 1;
}

/* shape_check(n, value at x, o, depth) -> 1 when the value surely passes
 * n; the value written to o (when not NULL) as it passes. A value nested
 * deeper than encode goes is doubted (and the C stack bounded). */
static int shape_check(lua_State *L, Shape *n, int x, int uv, Out *o, int depth) {
  int ok;
  if (depth > MAX_DEPTH) return 0;
  switch (n->kind) {
  case S_BOOLEAN:
    ok = lua_type(L, x) == LUA_TBOOLEAN;
    break;
  case S_INTEGER:
  case S_NUMBER:
    if (n->kind == S_INTEGER ? !lua_isinteger(L, x) : lua_type(L, x) != LUA_TNUMBER) return 0;
    ok = n->set ? in_set(L, x, uv, n->set) : within(L, n, x, uv);
    break;
  case S_ENUM:
    ok = in_set(L, x, uv, n->set);
    break;
  case S_STRING:
    ok = check_string(L, n, x, uv);
    break;
  case S_ARRAY:
    return check_array(L, n, x, uv, o, depth);
  case S_OBJECT:
    return check_object(L, n, x, uv, o, depth);
  default:
    return 0;
  }
  if (ok) put_scalar(L, x, o);
  return ok;
}

/* check(v [, text]) -> boolean [, text | nil] */
static int check_call(lua_State *L) {
  Check *c = luaL_checkudata(L, 1, SHAPE_MT);
  luaL_checkany(L, 2);
  int text = lua_toboolean(L, 3);
  lua_settop(L, 2);
  lua_getiuservalue(L, 1, 1); /* at 3 */
  char first[4096], spare[sizeof first];
  Out buf = {.p = first, .cap = sizeof first, .fixed = 1, .spare = spare};
  Out *o = text && collation_is_c() ? &buf : NULL;
  int ok = c->root != NULL && shape_check(L, c->root, 2, 3, o, 1);
  lua_pushboolean(L, ok);
  if (!text) return 1;
  if (ok && o && !o->off) lua_pushlstring(L, o->p, o->len);
  else lua_pushnil(L);
  return 2;
}

/* shape(description) -> check */
static int json_shape(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  Check *c = lua_newuserdatauv(L, sizeof *c, 1); /* at 2 */
  c->root = NULL;
  luaL_setmetatable(L, SHAPE_MT);
  lua_newtable(L);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 2, 1); /* the uservalues, at 3 */
  c->root = shape_node(L, 1, 3);
  lua_settop(L, 2);
  return 1;
}

/* ---- integers: what a decoder read as floats ---------------------------- */

/* cjson's nesting limit when it decodes */
#define DECODE_DEPTH 1000

/* integral(L, i, &n) -> 1 when the value at i is a float with an integral
 * value, n (1000.0 -> 1000; 1.5, 1e300, NaN: 0) */
static int integral(lua_State *L, int i, lua_Integer *n) {
  int isint = 0;
  if (lua_type(L, i) == LUA_TNUMBER && !lua_isinteger(L, i)) *n = lua_tointegerx(L, i, &isint);
  return isint;
}

/* Replaces, in the table at idx and the tables it holds (to DECODE_DEPTH),
 * each float value with an integral value by that integer. Only existing
 * fields change, which lua_next allows. */
static void integers(lua_State *L, int idx, int depth) {
  if (depth > DECODE_DEPTH) return;
  luaL_checkstack(L, 4, "integers: too deep"); /* key, value, key copy, integer */
  lua_pushnil(L);
  while (lua_next(L, idx)) { /* [key, value] */
    lua_Integer n;
    if (lua_type(L, -1) == LUA_TTABLE) {
      integers(L, lua_gettop(L), depth + 1);
    } else if (integral(L, -1, &n)) {
      lua_pushvalue(L, -2);
      lua_pushinteger(L, n);
      lua_rawset(L, idx);
    }
    lua_pop(L, 1);
  }
}

/* integers(v) -> v, in which every float with an integral value is now an
 * integer (cjson 2.1.0 reads every number as a float) */
static int json_integers(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  lua_Integer n;
  if (lua_type(L, 1) == LUA_TTABLE) integers(L, 1, 1);
  else if (integral(L, 1, &n)) lua_pushinteger(L, n);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"encode", json_encode},
  {"integers", json_integers},
  {"shape", json_shape},
  {NULL, NULL}
};

int luaopen_quan_json(lua_State *L) {
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, SHAPE_MT)) {
    lua_pushcfunction(L, check_call);
    lua_setfield(L, -2, "__call");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
