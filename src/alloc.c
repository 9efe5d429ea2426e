/* alloc.c: the allocator of quan's main Lua state (main.c makes the state
 * with it; the states of server threads keep malloc, so the lists below
 * serve one state, used by one thread at a time as Lua requires).
 *
 * A request makes some sixty small objects (strings, tables, their parts),
 * and the collector frees them many at a time, more than malloc's
 * per-thread cache holds: malloc then serves the next ones from its bins,
 * from memory the wait for the server has made cold. Here blocks of up to
 * SMALL bytes come from free lists, one per GRAIN-byte size class, carved
 * from SLAB-byte slabs: a freed block is the next one of its size handed
 * out, with no bins and no coalescing. Larger blocks go to malloc.
 *
 * Memory freed into a list stays there for blocks of the same size class
 * (it is not given back to malloc): for each class, the lists hold at most
 * what the state once held live of that size. A program that fills memory
 * with blocks of one size, frees them, then fills it with blocks of
 * another keeps both.
 * Built with AddressSanitizer, or run by a valgrind tool that watches
 * malloc (memcheck, massif, ...), the state keeps malloc, so that the tool
 * still sees every block (as GLib's slices do under valgrind). Valgrind's
 * callgrind and cachegrind leave malloc alone: they count this allocator,
 * as the binary runs it. */
#include <stdlib.h>
#include <string.h>
#include "quan.h"

#if defined(__SANITIZE_ADDRESS__)
#define QUAN_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUAN_ASAN 1
#endif
#endif

#define GRAIN 16
#define SMALL 256
#define SLAB (64 * 1024)

typedef struct Block {
  struct Block *next;
} Block;

static struct {
  Block *free[SMALL / GRAIN];
  char *next, *end; /* the unused rest of the newest slab */
} pool;

static size_t class_of(size_t n) { /* n in 1..SMALL */
  return (n - 1) / GRAIN;
}

static void *small_alloc(size_t n) {
  size_t c = class_of(n);
  Block *b = pool.free[c];
  if (b) {
    pool.free[c] = b->next;
    return b;
  }
  size_t size = (c + 1) * GRAIN;
  if ((size_t)(pool.end - pool.next) < size) {
    char *slab = malloc(SLAB); /* the rest of the old one is left unused */
    if (slab == NULL) return NULL;
    pool.next = slab;
    pool.end = slab + SLAB;
  }
  void *r = pool.next;
  pool.next += size;
  return r;
}

static void small_free(void *p, size_t n) {
  Block *b = p;
  size_t c = class_of(n);
  b->next = pool.free[c];
  pool.free[c] = b;
}

/* lua_Alloc. A block is in the lists' domain while its size is SMALL or
 * less: one malloc made larger and that a shrink left in place (below) ends
 * in the lists when freed, never given to free. Every other small block
 * comes from a slab, at least as large as its class: the state uses this
 * allocator from its first block (quan_alloc, main.c). */
static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  if (ptr == NULL) osize = 0; /* then osize is the kind of object */
  if (nsize == 0) {
    if (ptr == NULL) return NULL;
    if (osize <= SMALL) small_free(ptr, osize);
    else free(ptr);
    return NULL;
  }
  if (osize > SMALL && nsize > SMALL) return realloc(ptr, nsize);
  if (osize != 0 && osize <= SMALL && nsize <= SMALL && class_of(osize) == class_of(nsize)) return ptr;
  void *r = nsize <= SMALL ? small_alloc(nsize) : malloc(nsize);
  if (r == NULL) return nsize <= osize ? ptr : NULL; /* Lua counts on a shrink never failing */
  if (ptr) {
    memcpy(r, ptr, osize < nsize ? osize : nsize);
    if (osize <= SMALL) small_free(ptr, osize);
    else free(ptr);
  }
  return r;
}

/* whether a valgrind tool that replaces malloc runs this process: it
 * preloads its own vgpreload_<tool> beside vgpreload_core */
static int malloc_watched(void) {
  const char *p = getenv("LD_PRELOAD");
  while (p && (p = strstr(p, "vgpreload_")) != NULL) {
    p += strlen("vgpreload_");
    if (strncmp(p, "core-", 5) != 0) return 1;
  }
  return 0;
}

lua_Alloc quan_alloc(void) {
#ifdef QUAN_ASAN
  return NULL;
#else
  return malloc_watched() ? NULL : alloc;
#endif
}
