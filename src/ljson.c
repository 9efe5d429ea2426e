/* ljson.c: quan.json, the fast path of wechatpay.json's encoder.
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
 * The text is built in a malloc'd buffer owned by a userdata box (freed by
 * __gc if a memory error unwinds). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "quan.h"

#define BOX_MT "quan.json.buffer"
#define MAX_DEPTH 100
#define MAX_KEYS 64

typedef struct Out {
  char *p;
  size_t len, cap;
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

/* Appends n bytes; 0 when out of memory. */
static int put(Out *o, const char *p, size_t n) {
  if (n == 0) return 1;
  if (o->len + n > o->cap) {
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->len + n) cap *= 2;
    char *q = realloc(o->p, cap);
    if (q == NULL) return 0;
    o->p = q;
    o->cap = cap;
  }
  memcpy(o->p + o->len, p, n);
  o->len += n;
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

/* Appends s as a JSON string literal; 0 when s is not valid UTF-8 (the Lua
 * encoder names it) or out of memory. */
static int put_string(Out *o, const char *s, size_t n) {
  if (!put(o, "\"", 1)) return 0;
  size_t run = 0; /* bytes written as themselves, pending */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 128) {
      size_t len = utf8_seq((const unsigned char *)s, i, n, c);
      if (len == 0) return 0;
      run += len;
      i += len - 1;
      continue;
    }
    const char *e = escape[c];
    if (e == NULL) {
      run++;
      continue;
    }
    if (!put(o, s + i - run, run) || !put(o, e, strlen(e))) return 0;
    run = 0;
  }
  return put(o, s + n - run, run) && put(o, "\"", 1);
}

typedef struct Key {
  const char *s;
  size_t n;
  int value; /* stack index of the key's value */
} Key;

static int encode(lua_State *L, int idx, Out *o, int depth);

/* The object at idx with only string keys, in sorted order (strcoll, as
 * Lua's < on strings without embedded zeros). Each value is left on the
 * stack as lua_next gives it (below the key it iterates with), so no key is
 * looked up twice. */
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
    while (j > 0 && strcoll(keys[j - 1].s, k.s) > 0) {
      keys[j] = keys[j - 1];
      j--;
    }
    keys[j] = k;
  }
  int ok = 1;
  if (nk == 0) ok = put(o, "{}", 2);
  for (int i = 0; ok && i < nk; i++)
    ok = put(o, i == 0 ? "{" : ",", 1) && put_string(o, keys[i].s, keys[i].n) && put(o, ":", 1) &&
         encode(L, keys[i].value, o, depth + 1);
  lua_settop(L, base);
  return ok && (nk == 0 || put(o, "}", 1));
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
    if (!put(o, i == 1 ? "[" : ",", 1)) return 0;
    lua_rawgeti(L, idx, i);
    int ok = encode(L, lua_gettop(L), o, depth + 1);
    lua_pop(L, 1);
    if (!ok) return 0;
  }
  return put(o, "]", 1);
}

/* Appends the value at idx; 0 when outside the subset (or out of memory). */
static int encode(lua_State *L, int idx, Out *o, int depth) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return put_string(o, s, n);
  }
  case LUA_TNUMBER: {
    int isint;
    lua_Integer i = lua_tointegerx(L, idx, &isint); /* 1000.0 -> 1000 */
    if (!isint) return 0;
    char tmp[24], *p = tmp + sizeof tmp; /* the digits, backwards */
    lua_Unsigned u = i < 0 ? 0 - (lua_Unsigned)i : (lua_Unsigned)i;
    do *--p = (char)('0' + u % 10); while ((u /= 10) != 0);
    if (i < 0) *--p = '-';
    return put(o, p, (size_t)(tmp + sizeof tmp - p));
  }
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
  free(o->p);
  o->p = NULL;
  return 0;
}

/* encode(v) -> text | nil */
static int json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  Out *o = lua_newuserdatauv(L, sizeof *o, 0); /* the box, at 2 */
  memset(o, 0, sizeof *o);
  luaL_setmetatable(L, BOX_MT);
  if (encode(L, 1, o, 1)) lua_pushlstring(L, o->p ? o->p : "", o->len);
  else lua_pushnil(L);
  free(o->p);
  o->p = NULL;
  return 1;
}

static const luaL_Reg funcs[] = {
  {"encode", json_encode},
  {NULL, NULL}
};

int luaopen_quan_json(lua_State *L) {
  if (luaL_newmetatable(L, BOX_MT)) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
