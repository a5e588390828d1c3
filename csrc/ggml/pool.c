/* A persistent thread pool: n-1 workers created once, a spinning barrier between graph nodes, and
 * workers that spin for a short while after a job (the next eval usually follows at once) and then
 * sleep on a condition variable so an idle model costs no CPU. */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#if defined(__linux__)
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* How long an idle worker spins before sleeping; spinning beyond this only steals the core from
 * whatever the caller does between evals. */
#define RG_IDLE_SPIN_NS 200000LL
/* How long a thread spins in a barrier before sleeping. Most waits are shorter (the slowest thread of
 * a node finishes within microseconds); a long one means the thread we wait for has no core (more
 * threads than cores, or other processes), and then spinning or yielding would only steal its core. */
#define RG_BARRIER_SPIN_NS 50000LL
#define RG_BARRIER_SPINS_BEFORE_YIELD 4096

struct rg_pool {
    int n_threads;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* The run counter and the run's thread count in one word, (count << 16) | nth: a worker learns from
     * one load both that a run started and whether it takes part. With a separate thread count, a worker
     * that woke late for a run it was not needed in could pair that run's epoch with the next run's
     * count, join the next run early and then run it a second time (a double node and a hung barrier). */
    _Atomic uint64_t run;
    _Atomic int stop;
    rg_pool_job job;
    void *job_arg;
    _Atomic int n_done;
    /* barrier: count of arrivals and a generation that flips when the last one arrives */
    _Alignas(64) _Atomic int bar_count;
    _Alignas(64) _Atomic unsigned bar_gen;
    _Atomic int bar_sleepers;
};

typedef struct {
    rg_pool *pool;
    int ith;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *worker_main(void *p) {
    worker_arg *wa = p;
    rg_pool *pool = wa->pool;
    const int ith = wa->ith;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        /* Wait for a new run: spin first, then sleep. */
        long long spin_until = now_ns() + RG_IDLE_SPIN_NS;
        int spins = 0;
        while (atomic_load_explicit(&pool->run, memory_order_acquire) == seen &&
               !atomic_load_explicit(&pool->stop, memory_order_acquire)) {
            cpu_relax();
            if ((++spins & 255) == 0 && now_ns() > spin_until) {
                pthread_mutex_lock(&pool->mu);
                while (atomic_load(&pool->run) == seen && !atomic_load(&pool->stop))
                    pthread_cond_wait(&pool->cv, &pool->mu);
                pthread_mutex_unlock(&pool->mu);
            }
        }
        if (atomic_load(&pool->stop)) break;
        seen = atomic_load_explicit(&pool->run, memory_order_acquire);
        const int nth = (int)(seen & 0xffffu);
        if (ith < nth) {
            pool->job(pool->job_arg, ith, nth);
            atomic_fetch_add_explicit(&pool->n_done, 1, memory_order_release);
        }
    }
    return NULL;
}

rg_pool *rg_pool_new(int n_threads, rg_err *err) {
    if (err) {
        err->status = RG_OK;
        err->msg[0] = '\0';
    }
    if (n_threads < 1 || n_threads > 512) {
        rg_err_set(err, RG_E_ARG, "thread count must be 1..512, got %d", n_threads);
        return NULL;
    }
    rg_pool *pool = calloc(1, sizeof *pool);
    if (pool == NULL) {
        rg_err_set(err, RG_E_NOMEM, "out of memory creating a thread pool");
        return NULL;
    }
    pool->n_threads = n_threads;
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->cv, NULL);
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (pool->threads == NULL) {
        rg_pool_free(pool);
        rg_err_set(err, RG_E_NOMEM, "out of memory creating a thread pool");
        return NULL;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa == NULL || (wa->pool = pool, wa->ith = i, pthread_create(&pool->threads[i], NULL, worker_main, wa)) != 0) {
            free(wa);
            pool->n_threads = i; /* only join the ones that started */
            rg_pool_free(pool);
            rg_err_set(err, RG_E_NOMEM, "could not start thread %d of %d", i, n_threads);
            return NULL;
        }
    }
    return pool;
}

void rg_pool_free(rg_pool *pool) {
    if (pool == NULL) return;
    pthread_mutex_lock(&pool->mu);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 1; i < pool->n_threads; i++)
        if (pool->threads) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->cv);
    free(pool->threads);
    free(pool);
}

int rg_pool_n_threads(const rg_pool *pool) { return pool ? pool->n_threads : 0; }

void rg_pool_run(rg_pool *pool, rg_pool_job job, void *arg, int nth) {
    if (nth <= 1) {
        job(arg, 0, 1);
        return;
    }
    pool->job = job;
    pool->job_arg = arg;
    atomic_store_explicit(&pool->n_done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->bar_count, 0, memory_order_relaxed);
    pthread_mutex_lock(&pool->mu);
    const uint64_t next = ((atomic_load_explicit(&pool->run, memory_order_relaxed) >> 16) + 1) << 16;
    atomic_store_explicit(&pool->run, next | (uint64_t)nth, memory_order_release);
    pthread_cond_broadcast(&pool->cv);
    pthread_mutex_unlock(&pool->mu);
    job(arg, 0, nth);
    int spins = 0;
    while (atomic_load_explicit(&pool->n_done, memory_order_acquire) < nth - 1) {
        cpu_relax();
        if (++spins > RG_BARRIER_SPINS_BEFORE_YIELD) sched_yield();
    }
}

#if defined(__linux__)
static void futex_wait(_Atomic unsigned *addr, unsigned expected) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic unsigned *addr) {
    syscall(SYS_futex, (unsigned *)addr, FUTEX_WAKE_PRIVATE, 0x7fffffff, NULL, NULL, 0);
}
#endif

void rg_pool_barrier(rg_pool *pool, int nth) {
    if (nth <= 1) return;
    const unsigned gen = atomic_load_explicit(&pool->bar_gen, memory_order_acquire);
    if (atomic_fetch_add_explicit(&pool->bar_count, 1, memory_order_acq_rel) == nth - 1) {
        atomic_store_explicit(&pool->bar_count, 0, memory_order_relaxed);
        atomic_fetch_add_explicit(&pool->bar_gen, 1, memory_order_seq_cst);
#if defined(__linux__)
        if (atomic_load_explicit(&pool->bar_sleepers, memory_order_seq_cst) > 0) futex_wake_all(&pool->bar_gen);
#endif
        return;
    }
    int spins = 0;
    long long deadline = 0;
    while (atomic_load_explicit(&pool->bar_gen, memory_order_acquire) == gen) {
        cpu_relax();
        if ((++spins & 63) != 0) continue;
        const long long now = now_ns();
        if (deadline == 0) {
            deadline = now + RG_BARRIER_SPIN_NS;
            continue;
        }
        if (now < deadline) continue;
#if defined(__linux__)
        /* Sleep until the generation changes. Announcing the sleeper before re-checking the generation
         * (both seq_cst) means the last arriver either sees the sleeper and wakes it, or we see the new
         * generation and do not sleep; FUTEX_WAIT itself also returns at once if it already changed. */
        atomic_fetch_add_explicit(&pool->bar_sleepers, 1, memory_order_seq_cst);
        if (atomic_load_explicit(&pool->bar_gen, memory_order_seq_cst) == gen) futex_wait(&pool->bar_gen, gen);
        atomic_fetch_sub_explicit(&pool->bar_sleepers, 1, memory_order_seq_cst);
#else
        sched_yield();
#endif
    }
}
