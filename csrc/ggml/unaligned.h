/* Loads and stores at any byte address. Weights may sit at any offset of a memory-mapped file (the
 * format aligns nothing) and block fields sit at odd offsets inside blocks, so they are read through
 * memcpy: a plain load on x86, and defined behaviour everywhere. */
#ifndef RG_UNALIGNED_H
#define RG_UNALIGNED_H

#include <stdint.h>
#include <string.h>

static inline float rg_load_f32(const void *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint16_t rg_load_u16(const void *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline uint32_t rg_load_u32(const void *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void rg_store_u16(void *p, uint16_t v) { memcpy(p, &v, sizeof v); }
static inline void rg_store_u32(void *p, uint32_t v) { memcpy(p, &v, sizeof v); }

#endif
