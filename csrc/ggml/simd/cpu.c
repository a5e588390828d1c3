/* CPU feature detection and the kernel table: the engine's only process-wide mutable state. */
#include "kernels.h"
#include "../../include/rwkv_ggml.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

rg_kernel_table rg_kernels;

static unsigned g_detected; /* what the CPU has */
static unsigned g_features; /* what the kernels may use: g_detected less the mask */
static int g_max_level;
static int g_level;
static int g_cap; /* the level asked for (rg_simd_select; start-up: the highest) */
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

/* What each level adds (rwkv_ggml.h). */
#define RG_LEVEL1_FEATURES (RG_CPU_AVX2 | RG_CPU_FMA | RG_CPU_F16C)
#define RG_LEVEL2_FEATURES (RG_CPU_AVX512F | RG_CPU_AVX512BW | RG_CPU_AVX512VL)

#if defined(__x86_64__) || defined(_M_X64)
static unsigned long long read_xcr0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static int amx_permitted(void) {
#if defined(__linux__) && defined(__x86_64__)
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
#else
    return 0;
#endif
}

static unsigned detect(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return 0;
    /* The OS must save the wider registers on context switch, or the instructions fault. */
    const unsigned long long xcr0 = read_xcr0();
    const int ymm_ok = (xcr0 & 0x6) == 0x6;
    const int zmm_ok = (xcr0 & 0xe6) == 0xe6;
    if (!ymm_ok) return 0;
    if (fma) f |= RG_CPU_FMA;
    if (f16c) f |= RG_CPU_F16C;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        if ((b >> 5) & 1) f |= RG_CPU_AVX2;
        if (zmm_ok) {
            if ((b >> 16) & 1) f |= RG_CPU_AVX512F;
            if ((b >> 30) & 1) f |= RG_CPU_AVX512BW;
            if ((b >> 31) & 1) f |= RG_CPU_AVX512VL;
            if ((c >> 11) & 1) f |= RG_CPU_AVX512_VNNI;
        }
    }
    /* AMX: the tile registers must be enabled in XCR0 (bits 17, 18), and Linux hands them to a process only
     * after it asks (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA; once, process-wide) */
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && ((d >> 24) & 1) && ((d >> 25) & 1) &&
        (xcr0 & 0x60000) == 0x60000 && amx_permitted())
        f |= RG_CPU_AMX_INT8;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) {
        if ((a >> 4) & 1) f |= RG_CPU_AVX_VNNI;
        if (zmm_ok && ((a >> 5) & 1)) f |= RG_CPU_AVX512_BF16;
    }
    return f;
}
#else
static unsigned detect(void) { return 0; }
#endif

/* Every kernel file's fill function (kernels.h), lower levels first: a higher level's entries replace
 * them where the level and the features allow. */
static const rg_kernels_fill_fn RG_FILLS[] = {
    rg_kernels_fill_vec_scalar, rg_kernels_fill_quant_scalar, rg_kernels_fill_vec_avx2,
    rg_kernels_fill_quant_avx2, rg_kernels_fill_vec_avx512,   rg_kernels_fill_quant_avx512,
    rg_kernels_fill_gemm_tile,  rg_kernels_fill_gemm_panel,   rg_kernels_fill_gemm_panel_avx2,
    rg_kernels_fill_quant_panel, rg_kernels_fill_quant_panel_avx2, rg_kernels_fill_kquant_scalar,
    rg_kernels_fill_kquant_avx2, rg_kernels_fill_kquant_avx512, rg_kernels_fill_quant_amx,
    rg_kernels_fill_quant_narrow,
};

static void apply_level(int level) {
    for (size_t i = 0; i < sizeof RG_FILLS / sizeof RG_FILLS[0]; i++) RG_FILLS[i](&rg_kernels, level, g_features);
    g_level = level;
}

/* The features a CPU of this level has: the level follows from the features in effect. */
static void set_features(unsigned features) {
    g_features = features;
    g_max_level = 0;
    if ((g_features & RG_LEVEL1_FEATURES) == RG_LEVEL1_FEATURES) g_max_level = 1;
    if (g_max_level == 1 && (g_features & RG_LEVEL2_FEATURES) == RG_LEVEL2_FEATURES) g_max_level = 2;
}

/* RG_CPU_* bits by the lower-case names the Python binding uses (ggml.cpu_features). */
static const struct {
    const char *name;
    unsigned bit;
} RG_FEATURE_NAMES[] = {
    {"avx2", RG_CPU_AVX2},         {"fma", RG_CPU_FMA},
    {"f16c", RG_CPU_F16C},         {"avx512f", RG_CPU_AVX512F},
    {"avx512bw", RG_CPU_AVX512BW}, {"avx512vl", RG_CPU_AVX512VL},
    {"avx512_vnni", RG_CPU_AVX512_VNNI}, {"avx_vnni", RG_CPU_AVX_VNNI},
    {"avx512_bf16", RG_CPU_AVX512_BF16}, {"amx_int8", RG_CPU_AMX_INT8},
};

/* RWKV_GGML_CPU_MASK: comma-separated feature names to hide (unknown names are ignored: an environment
 * variable has no one to report an error to, and a name from a newer version must not stop the engine). */
static unsigned mask_from_env(void) {
    const char *env = getenv("RWKV_GGML_CPU_MASK");
    unsigned mask = 0;
    if (env == NULL) return 0;
    while (*env != '\0') {
        const size_t len = strcspn(env, ",");
        for (size_t i = 0; i < sizeof RG_FEATURE_NAMES / sizeof RG_FEATURE_NAMES[0]; i++)
            if (strlen(RG_FEATURE_NAMES[i].name) == len && strncmp(env, RG_FEATURE_NAMES[i].name, len) == 0)
                mask |= RG_FEATURE_NAMES[i].bit;
        env += len;
        if (*env == ',') env++;
    }
    return mask;
}

static void init_once(void) {
    g_detected = detect();
    set_features(g_detected & ~mask_from_env());
    const char *force = getenv("RWKV_GGML_FORCE_SCALAR");
    const int forced = force != NULL && force[0] != '\0' && force[0] != '0';
    g_cap = forced ? 0 : 2;
    apply_level(forced ? 0 : g_max_level);
}

void rg_kernels_init(void) { pthread_once(&g_once, init_once); }

int rg_simd_level(void) {
    rg_kernels_init();
    return g_level;
}

int rg_simd_max_level(void) {
    rg_kernels_init();
    return g_max_level;
}

unsigned rg_cpu_features(void) {
    rg_kernels_init();
    return g_features;
}

int rg_simd_select(int max_level) {
    rg_kernels_init();
    g_cap = max_level;
    int level = max_level < g_max_level ? max_level : g_max_level;
    if (level < 0) level = 0;
    apply_level(level);
    return g_level;
}

unsigned rg_cpu_mask(unsigned hidden) {
    rg_kernels_init();
    set_features(g_detected & ~hidden);
    const int level = g_cap < g_max_level ? g_cap : g_max_level;
    apply_level(level < 0 ? 0 : level);
    return g_features;
}
