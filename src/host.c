/* host.c: makes a Lua state quan's: natives and embedded modules reachable
 * through require, and the client ("wechatpay") with quan's tools plugged
 * into its hooks. */
#include <string.h>
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
  if (luaL_loadbufferx(L, m->source, m->size, m->chunkname, "t") != LUA_OK)
    return lua_error(L);
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
  if (luaL_loadbufferx(L, m->source, m->size, m->chunkname, "t") != LUA_OK)
    return lua_error(L);
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
}

lua_State *quan_newstate(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  quan_openlibs(L);
  return L;
}
