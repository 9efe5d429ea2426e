/* bytecode.c: the build's Lua compiler (build/bytecode, run by
 * scripts/embed.sh). `bytecode FILE CHUNKNAME` writes FILE compiled to Lua
 * bytecode on stdout, as the liblua5.4 it is linked with loads it: the
 * embedded modules are parsed once, at build time, not by every quan that
 * starts. Debug information is kept (CHUNKNAME, line numbers, local names),
 * so errors and tracebacks still name lua/<module>.lua:<line>. A syntax
 * error fails the build with the parser's message. */
#include <stdio.h>
#include <lua.h>
#include <lauxlib.h>

/* lua_Writer: appends the dump to stdout */
static int write_out(lua_State *L, const void *p, size_t n, void *ud) {
  (void)L;
  return fwrite(p, 1, n, (FILE *)ud) != n;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: bytecode FILE CHUNKNAME > OUT\n");
    return 2;
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "bytecode: cannot create a Lua state\n");
    return 1;
  }
  /* luaL_loadfilex would name the chunk "@FILE"; the chunk name is given,
   * so a module reads the same wherever the build ran */
  FILE *f = fopen(argv[1], "rb");
  if (f == NULL) {
    perror(argv[1]);
    return 1;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  size_t n;
  do {
    char *p = luaL_prepbuffer(&b);
    n = fread(p, 1, LUAL_BUFFERSIZE, f);
    luaL_addsize(&b, n);
  } while (n == LUAL_BUFFERSIZE);
  int bad = ferror(f);
  fclose(f);
  luaL_pushresult(&b);
  if (bad) {
    fprintf(stderr, "bytecode: cannot read %s\n", argv[1]);
    return 1;
  }
  size_t len;
  const char *src = lua_tolstring(L, -1, &len);
  if (luaL_loadbufferx(L, src, len, argv[2], "t") != LUA_OK) {
    fprintf(stderr, "bytecode: %s\n", lua_tostring(L, -1));
    return 1;
  }
  if (lua_dump(L, write_out, stdout, 0) != 0 || fflush(stdout) != 0) {
    fprintf(stderr, "bytecode: cannot write the bytecode of %s\n", argv[1]);
    return 1;
  }
  lua_close(L);
  return 0;
}
