/* tests/fuzz/natives.c: a libFuzzer target over quan's natives as Lua code
 * calls them (`make fuzz`). Each input goes to tests/fuzz/natives.lua's
 * one(data), which hands it to parsers that take bytes from the world
 * (base64, PEM and DER keys and certificates, signatures, AES-GCM, JSON, the
 * checks of an answer) and raises when one of them breaks its contract. A raise
 * is reported as a crash, as are the sanitizers' findings. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "quan.h"

static lua_State *L;

static void fail(const char *what) {
  fprintf(stderr, "fuzz: %s: %s\n", what, lua_tostring(L, -1));
  abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  L = quan_newstate();
  if (L == NULL) return 1;
  if (luaL_dofile(L, "tests/fuzz/natives.lua") != LUA_OK) fail("setup");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  lua_getglobal(L, "one");
  lua_pushlstring(L, (const char *)data, size);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) fail("contract broken");
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
