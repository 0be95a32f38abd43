/* y = x W^T for a pass of a few tokens on a CPU with AVX2 + FMA, W stored as model.BlockedLinear
 * stores it: blocks (out/16, in, 16), block j holding W's rows 16j..16j+15 transposed.
 *
 * Why a kernel of our own: a decoding pass of n tokens reads every weight once whatever n is, so
 * until n is large it should cost what a 1-token pass costs, the time to stream the weights from
 * memory. torch.matmul over the blocks (MKL's batched product) streams them at ~70% of this VM's
 * bandwidth for one token and takes 1.6x as long for 8. Here each block is read from memory once
 * and multiplied by all n tokens while it sits in the core's cache, with the next block
 * prefetched meanwhile (bench.py prints the pass-cost curve with and without it).
 *
 * Every output is the same sum in the same order, k = 0, 1, ..., in-1, of fused multiply-adds,
 * whatever n is and whichever rows share the pass: a token's hidden states come out bit for bit
 * the same in a tree's pass as in a 1-token pass.
 *
 * Built by model.py on first use (cc -O3 -mavx2 -mfma -fopenmp; ~1 s) and called through ctypes;
 * without a compiler or AVX2, torch.matmul does the same product.
 */
#include <immintrin.h>
#include <stdint.h>

/* A tile: R rows of x times J blocks, 2R J accumulators of 8 floats. The accumulators are named
 * variables a<row><block><half>: the compiler keeps those in registers (an array of them it kept
 * on the stack, stored on every step). R and J are constants in each tile_R_J below, so the
 * `r < R && j < J` tests fold away and only the tile's own variables remain. AVX2 has 16 vector
 * registers: R J <= 6 leaves room for the weights and the broadcast x value. Tiles of 6-7 rows x 1
 * block spill accumulators to the stack, yet a 6-7 token pass ran faster in one such tile, reading
 * each block once, than in two of 3-4 rows; a longer pass, which reads every block several times
 * anyway, runs faster in tiles of 4-5 rows, whose accumulators stay in registers. */
#define ZERO(r, j) __m256 a##r##j##0 = _mm256_setzero_ps(), a##r##j##1 = _mm256_setzero_ps();
#define LOAD_W(j) __m256 w##j##0 = _mm256_setzero_ps(), w##j##1 = w##j##0; \
    if (j < J) { w##j##0 = _mm256_loadu_ps(w + j * in * 16 + k * 16); \
                 w##j##1 = _mm256_loadu_ps(w + j * in * 16 + k * 16 + 8); }
#define LOAD_X(r) __m256 x##r = r < R ? _mm256_broadcast_ss(x + r * in + k) : _mm256_setzero_ps();
#define FMA(r, j) if (r < R && j < J) { a##r##j##0 = _mm256_fmadd_ps(x##r, w##j##0, a##r##j##0); \
                                        a##r##j##1 = _mm256_fmadd_ps(x##r, w##j##1, a##r##j##1); }
#define STORE(r, j) if (r < R && j < J) { _mm256_storeu_ps(y + r * ldy + j * 16, a##r##j##0); \
                                          _mm256_storeu_ps(y + r * ldy + j * 16 + 8, a##r##j##1); }
#define ROW(M, r) M(r, 0) M(r, 1) M(r, 2)
#define ALL(M) ROW(M, 0) ROW(M, 1) ROW(M, 2) ROW(M, 3) ROW(M, 4) ROW(M, 5) ROW(M, 6)

/* x (R, in) rows, w: J consecutive blocks (J, in, 16), y: R rows of J * 16 outputs, ldy apart.
 * next: the blocks this thread reads after these, fetched into the cache one 64-byte line
 * (one k of one block) per step, so memory keeps streaming while the tile computes. */
static inline __attribute__((always_inline))
void tile(const int R, const int J, const float *x, int64_t in, const float *w, float *y, int64_t ldy,
          const float *next) {
    ALL(ZERO)
    for (int64_t k = 0; k < in; k++) {
        LOAD_W(0) LOAD_W(1) LOAD_W(2)
        LOAD_X(0) LOAD_X(1) LOAD_X(2) LOAD_X(3) LOAD_X(4) LOAD_X(5) LOAD_X(6)
        ALL(FMA)
        for (int j = 0; j < J; j++)
            _mm_prefetch((const char *)(next + j * in * 16 + k * 16), _MM_HINT_T0);
    }
    ALL(STORE)
}

#define TILE(R, J) static void tile_##R##_##J(const float *x, int64_t in, const float *w, float *y, int64_t ldy, \
                                              const float *next) { tile(R, J, x, in, w, y, ldy, next); }
TILE(1, 1) TILE(1, 2) TILE(1, 3) TILE(2, 1) TILE(2, 2) TILE(2, 3)
TILE(3, 1) TILE(3, 2) TILE(4, 1) TILE(5, 1) TILE(6, 1) TILE(7, 1)
typedef void (*tile_fn)(const float *, int64_t, const float *, float *, int64_t, const float *);
static const tile_fn TILES[8][4] = {
    [1] = {0, tile_1_1, tile_1_2, tile_1_3}, [2] = {0, tile_2_1, tile_2_2, tile_2_3},
    [3] = {0, tile_3_1, tile_3_2}, [4] = {0, tile_4_1}, [5] = {0, tile_5_1},
    [6] = {0, tile_6_1}, [7] = {0, tile_7_1},
};

/* y (n, nb * 16) = x (n, in) times the blocks w (nb, in, 16); all contiguous float32, n >= 1.
 * Tiles: 1-2 tokens take 3 blocks at a time, 3-4 take 2 (enough accumulators to keep both FMA
 * units busy), 5-7 take one block at a time, all rows in one tile, and more take one block in
 * near-equal groups of at most 5 rows (measured fastest on this project's 2-core AMD EPYC VM).
 * The threads split the blocks. */
void blocked_matmul(const float *x, const float *w, float *y, int64_t n, int64_t in, int64_t nb, int threads) {
    const int J = n <= 2 ? 3 : n <= 4 ? 2 : 1;
    const int64_t rmax = n <= 2 ? n : n <= 4 ? 2 : n <= 7 ? n : 5, groups = (n + rmax - 1) / rmax;
    const int64_t tiles = (nb + J - 1) / J;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t t = 0; t < tiles; t++) {
        const int64_t j0 = t * J;
        const int jn = nb - j0 < J ? (int)(nb - j0) : J;                  /* the last tile may be narrower */
        /* the last tile fetches itself; a prefetch past the end of w (a narrower last tile) never faults */
        const float *next = w + (t + 1 < tiles ? j0 + J : j0) * in * 16;
        for (int64_t g = 0, r0 = 0; g < groups; g++) {
            const int64_t r1 = n * (g + 1) / groups;
            TILES[r1 - r0][jn](x + r0 * in, in, w + j0 * in * 16, y + r0 * nb * 16 + j0 * 16, nb * 16, next);
            r0 = r1;
        }
    }
}
