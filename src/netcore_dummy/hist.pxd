# Latency histograms for the dummy (tally.pxd: why log-linear) and its clock:
# inline functions and constants, cimported by tally.pyx and walk.pyx.

from libc.stdint cimport int64_t, uint64_t

cdef enum:
    # Log-linear histogram: exact below 2 * HIST_SUB us, then HIST_SUB
    # buckets per power of two, so every bucket is within 1/128 (0.8%) of
    # its value. Latencies clamp at 2**HIST_MAX_BITS us (19 hours).
    HIST_SUB_BITS = 7
    HIST_SUB = 128
    HIST_MAX_BITS = 36
    HIST_BUCKETS = (HIST_MAX_BITS - HIST_SUB_BITS) * HIST_SUB + HIST_SUB

cdef extern from *:
    """
    #include <stdint.h>
    #if defined(_WIN32)
    #include <windows.h>
    /* QueryPerformanceCounter is what time.monotonic() reads on Windows. */
    static int64_t dummy_clock_us(void) {
        LARGE_INTEGER f, c;
        QueryPerformanceFrequency(&f);
        QueryPerformanceCounter(&c);
        return (int64_t)(c.QuadPart / f.QuadPart) * 1000000
             + (int64_t)((c.QuadPart % f.QuadPart) * 1000000 / f.QuadPart);
    }
    #else
    #include <time.h>
    /* CLOCK_MONOTONIC: the clock time.monotonic() reads, shared by every
       process of the machine, so a blaster process can stamp chats too. */
    static int64_t dummy_clock_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    }
    #endif
    static int dummy_bitlen64(uint64_t v) {
    #if defined(__GNUC__) || defined(__clang__)
        return v ? 64 - __builtin_clzll(v) : 0;
    #else
        int n = 0;
        while (v) { n++; v >>= 1; }
        return n;
    #endif
    }
    """
    int64_t dummy_clock_us() nogil
    int dummy_bitlen64(uint64_t v) nogil


cdef inline Py_ssize_t hist_index(uint64_t v) noexcept nogil:
    cdef int shift
    if v >> HIST_MAX_BITS:
        v = (<uint64_t>1 << HIST_MAX_BITS) - 1
    shift = dummy_bitlen64(v) - (HIST_SUB_BITS + 1)
    if shift < 0:
        shift = 0
    return shift * HIST_SUB + <Py_ssize_t>(v >> shift)


cdef inline uint64_t hist_low(Py_ssize_t i) noexcept nogil:
    """The smallest value that lands in bucket i."""
    cdef int shift
    if i < 2 * HIST_SUB:
        return <uint64_t>i
    shift = <int>(i // HIST_SUB) - 1
    return <uint64_t>(i - shift * HIST_SUB) << shift


cdef inline uint64_t hist_mid(Py_ssize_t i) noexcept nogil:
    cdef uint64_t low = hist_low(i)
    cdef uint64_t high = (hist_low(i + 1) - 1) if i + 1 < HIST_BUCKETS else low
    return low + (high - low) // 2


cdef inline uint64_t hist_percentile(const uint64_t* h, const uint64_t* base, double q,
                              uint64_t cap) noexcept:
    """Value at quantile q (0..1] of h - base (base may be NULL); 0 when empty."""
    cdef uint64_t total = 0, cum = 0, rank
    cdef double x
    cdef Py_ssize_t i
    for i in range(HIST_BUCKETS):
        total += h[i] - (base[i] if base != NULL else 0)
    if total == 0:
        return 0
    # Nearest rank, ceil(q * total), forgiving the rounding of q * total
    # (0.9 * 10 is 9.000000000000002, whose ceil would be the 10th value).
    x = q * <double>total
    rank = <uint64_t>x
    if x - <double>rank > x * 1e-9:
        rank += 1
    rank = 1 if rank < 1 else (total if rank > total else rank)
    for i in range(HIST_BUCKETS):
        cum += h[i] - (base[i] if base != NULL else 0)
        if cum >= rank:
            return min(hist_mid(i), cap)
    return cap
