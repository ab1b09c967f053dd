//! Every `unsafe` block of the native engine: the instruction set chosen at run time and the
//! kernels of [`super::kernels`] and [`super::gemm`] compiled for it (calling a
//! `#[target_feature]` function), the attention's output shared by its worker threads, and the
//! checkpoint's memory map. Each block says why it is sound; the kernels themselves are safe
//! code with checked indexing.

use std::sync::OnceLock;

use super::gemm::{self, Epilogue};
use super::kernels;

/// The widest instruction set the kernels were compiled for that this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512 (F, BW, DQ, VL) with FMA.
    Avx512,
    /// AVX2 with FMA.
    Avx2,
    /// The baseline the binary was compiled for.
    Baseline,
}

impl Isa {
    /// Name for logs and the benchmark table.
    pub fn as_str(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2 => "avx2+fma",
            Isa::Baseline => "baseline",
        }
    }
}

/// The instruction set detected once at first use.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    let v4 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512dq")
        && std::arch::is_x86_feature_detected!("avx512vl");
    let v3 =
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    if v4 && v3 {
        Isa::Avx512
    } else if v3 {
        Isa::Avx2
    } else {
        Isa::Baseline
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Isa {
    Isa::Baseline
}

/// Defines a safe function that runs `$body` compiled for the detected [`Isa`].
macro_rules! dispatched {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    generic($($arg),*)
                }
                match isa() {
                    // SAFETY: `isa()` found AVX-512 F/BW/DQ/VL, AVX2 and FMA on this CPU.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: `isa()` found AVX2 and FMA on this CPU.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            generic($($arg),*)
        }
    };
}

dispatched! {
    /// [`kernels::layer_norm_rows`].
    pub fn layer_norm_rows(x: &[f32], out: &mut [f32], cols: usize, w: &[f32], b: &[f32], eps: f32) {
        kernels::layer_norm_rows(x, out, cols, w, b, eps)
    }
}

dispatched! {
    /// [`kernels::silu_mul_rows`].
    pub fn silu_mul_rows(gate_up: &[f32], out: &mut [f32], cols: usize) {
        kernels::silu_mul_rows(gate_up, out, cols)
    }
}

dispatched! {
    /// [`kernels::softmax_rows`].
    pub fn softmax_rows(x: &mut [f32], cols: usize) {
        kernels::softmax_rows(x, cols)
    }
}

dispatched! {
    /// [`kernels::rope`] on `count` consecutive head vectors `stride` apart, starting at
    /// `x[0]`, with `cos`/`sin` rows `head_dim` wide (one row per vector).
    pub fn rope_rows(x: &mut [f32], stride: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
        for ((row, c), s) in x
            .chunks_mut(stride)
            .zip(cos.chunks_exact(head_dim))
            .zip(sin.chunks_exact(head_dim))
        {
            kernels::rope(&mut row[..head_dim], c, s)
        }
    }
}

/// Memory-map `file` read-only (the checkpoint's tensors are converted from the map at load).
pub fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: memmap2 requires that the file is not changed while mapped. The map is only read
    // while the model loads and is dropped afterwards; a checkpoint rewritten in that window
    // gives wrong weights (its sha256 is checked against the manifest), never unsafety in
    // our code, which copies the values out.
    unsafe { memmap2::Mmap::map(file) }
}

/// A fixed team of threads for the engine's parallel passes: the caller is member 0, the
/// other `threads - 1` wait (spinning briefly, then on a condition variable) for the next pass.
///
/// Unlike a work-stealing pool, handing a pass to the team allocates nothing: the pass is a
/// borrowed closure published under a mutex, and [`Team::run`] returns only when every member
/// has finished it. One caller at a time runs a pass (a second waits for the first).
pub struct Team {
    shared: std::sync::Arc<TeamShared>,
    workers: Vec<std::thread::JoinHandle<()>>,
    caller: std::sync::Mutex<()>,
}

/// A pass as the members see it: a type-erased pointer to the caller's closure.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync` (shared by reference between threads is fine) and is alive
// whenever a member dereferences it: `Team::run` waits for every member before returning.
unsafe impl Send for Job {}

struct TeamState {
    epoch: u64,
    job: Option<Job>,
    stop: bool,
}

struct TeamShared {
    size: usize,
    state: std::sync::Mutex<TeamState>,
    start: std::sync::Condvar,
    /// Mirrors `state.epoch` for members spinning between passes.
    epoch: std::sync::atomic::AtomicU64,
    remaining: std::sync::atomic::AtomicUsize,
    panicked: std::sync::atomic::AtomicBool,
    done: std::sync::Mutex<()>,
    finished: std::sync::Condvar,
}

/// Spins (about 50-100 µs) before a waiting member or caller sleeps.
const SPINS: u32 = 1 << 14;

impl Team {
    /// A team of `threads` members (the caller plus `threads - 1` new threads named
    /// `native-<i>`).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
        let size = threads.max(1);
        let shared = std::sync::Arc::new(TeamShared {
            size,
            state: std::sync::Mutex::new(TeamState {
                epoch: 0,
                job: None,
                stop: false,
            }),
            start: std::sync::Condvar::new(),
            epoch: AtomicU64::new(0),
            remaining: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            done: std::sync::Mutex::new(()),
            finished: std::sync::Condvar::new(),
        });
        let mut workers = Vec::with_capacity(size - 1);
        for member in 1..size {
            let shared = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("native-{member}"))
                    .spawn(move || member_loop(&shared, member))?,
            );
        }
        Ok(Self {
            shared,
            workers,
            caller: std::sync::Mutex::new(()),
        })
    }

    /// Members, the caller included.
    pub fn threads(&self) -> usize {
        self.shared.size
    }

    /// Run `f(member)` on every member (`0..threads`) and return when all have finished.
    ///
    /// # Panics
    /// If `f` panicked on any member (after all have finished).
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        use std::sync::atomic::Ordering;
        let sh = &*self.shared;
        if sh.size == 1 {
            f(0);
            return;
        }
        let _one_caller = self.caller.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: only the lifetime is erased. The pointer is published below and read by the
        // members of this pass only; this function does not return (and `f` stays borrowed)
        // until `remaining` has dropped to zero, i.e. every member has finished calling it.
        let job = Job(unsafe {
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const (dyn Fn(usize) + Sync)>(
                f as *const (dyn Fn(usize) + Sync),
            )
        });
        sh.remaining.store(sh.size - 1, Ordering::SeqCst);
        {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            st.job = Some(job);
            st.epoch += 1;
            sh.epoch.store(st.epoch, Ordering::SeqCst);
        }
        sh.start.notify_all();
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0)));
        let mut spins = 0;
        while sh.remaining.load(Ordering::SeqCst) != 0 {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let guard = sh.done.lock().unwrap_or_else(|e| e.into_inner());
            if sh.remaining.load(Ordering::SeqCst) != 0 {
                drop(
                    sh.finished
                        .wait_timeout(guard, std::time::Duration::from_millis(1))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0),
                );
            }
        }
        if let Err(payload) = mine {
            std::panic::resume_unwind(payload);
        }
        assert!(
            !sh.panicked.swap(false, Ordering::SeqCst),
            "a native engine worker panicked"
        );
    }

    /// Split `data` (rows of `row_len` values) into one contiguous block of rows per member
    /// and run `f(first_row, block)` on each, in parallel.
    pub fn rows<T: Send>(
        &self,
        data: &mut [T],
        row_len: usize,
        f: &(dyn Fn(usize, &mut [T]) + Sync),
    ) {
        let rows = data.len().checked_div(row_len).unwrap_or(0);
        let size = self.threads();
        let per = rows.div_ceil(size).max(1);
        let base = SharedMut::new(&mut data[..rows * row_len]);
        let base = &base;
        self.run(&|member| {
            let first = member * per;
            if first >= rows {
                return;
            }
            let count = per.min(rows - first);
            let (start, len) = (first * row_len, count * row_len);
            assert!(start + len <= base.len, "team rows outside the buffer");
            // SAFETY: member `m` gets rows `m * per .. m * per + count`, inside the buffer
            // (checked above) and disjoint from every other member's rows.
            let block = unsafe { std::slice::from_raw_parts_mut(base.ptr.add(start), len) };
            f(first, block);
        });
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.stop = true;
        }
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn member_loop(sh: &TeamShared, member: usize) {
    use std::sync::atomic::Ordering;
    let mut seen = 0u64;
    loop {
        let mut spins = 0;
        while sh.epoch.load(Ordering::SeqCst) == seen && spins < SPINS {
            spins += 1;
            std::hint::spin_loop();
        }
        let job = {
            let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.epoch == seen && !st.stop {
                st = sh.start.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.stop {
                return;
            }
            seen = st.epoch;
            st.job
        };
        if let Some(Job(f)) = job {
            // SAFETY: `Team::run` published `f` for this epoch and waits for this member's
            // decrement of `remaining` below before it returns and the closure goes away.
            let f = unsafe { &*f };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(member))).is_err() {
                sh.panicked.store(true, Ordering::SeqCst);
            }
        }
        if sh.remaining.fetch_sub(1, Ordering::SeqCst) == 1 {
            let _g = sh.done.lock().unwrap_or_else(|e| e.into_inner());
            sh.finished.notify_all();
        }
    }
}

/// Drop the pages of `map[offset..offset + len]` from this process (whole pages inside the
/// range only); the file's data stays in the page cache and would be read back on access.
/// Keeps the checkpoint's mapping from adding its whole size to the resident memory while the
/// converted weights are built.
pub fn release_pages(map: &memmap2::Mmap, offset: usize, len: usize) {
    const PAGE: usize = 4096;
    let start = offset.div_ceil(PAGE) * PAGE;
    let end = ((offset + len) / PAGE * PAGE).min(map.len());
    if end <= start {
        return;
    }
    // SAFETY: MADV_DONTNEED on a private read-only file mapping only drops this process's
    // copies of the pages; a later read faults them back in from the file, so no slice into the
    // map ever sees different bytes. The range lies inside the map (clamped above).
    let _ = unsafe {
        map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
    };
}

/// [`gemm::gemm`] with the hand-written 6 x 16 AVX2 tile where the CPU has AVX2 and FMA (AVX-512
/// CPUs included), the compiler's 4-row tile on the baseline.
#[allow(
    clippy::too_many_arguments,
    reason = "one matrix product: its operands and shapes"
)]
pub fn gemm_packed(
    a: &[f32],
    lda: usize,
    rows: usize,
    b: &[f32],
    k: usize,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    alpha: f32,
    epilogue: Epilogue<'_>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::too_many_arguments, reason = "forwarded")]
        fn avx2(
            a: &[f32],
            lda: usize,
            rows: usize,
            b: &[f32],
            k: usize,
            n: usize,
            c: &mut [f32],
            ldc: usize,
            accumulate: bool,
            alpha: f32,
            epilogue: Epilogue<'_>,
        ) {
            gemm::gemm::<6>(
                a,
                lda,
                rows,
                b,
                k,
                n,
                c,
                ldc,
                accumulate,
                alpha,
                epilogue,
                Some(tile_avx2),
            )
        }
        if matches!(isa(), Isa::Avx512 | Isa::Avx2) {
            // SAFETY: `isa()` found AVX2 and FMA on this CPU (every AVX-512 CPU it accepts has
            // them too; the tile is the AVX2 one on both).
            return unsafe { avx2(a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue) };
        }
    }
    gemm::gemm::<4>(
        a, lda, rows, b, k, n, c, ldc, accumulate, alpha, epilogue, None,
    )
}

/// The 6 x 16 AVX2+FMA register tile: 12 accumulators, two loads of B and six broadcasts of
/// A per step of the depth.
///
/// # Panics
/// If the CPU lacks AVX2 or FMA (it is only handed to the product after `isa()` found them),
/// or a row of A is shorter than the panel slice.
fn tile_avx2(rows: &[&[f32]; 6], bp: &[[f32; gemm::NR]]) -> [[f32; gemm::NR]; 6] {
    #[cfg(target_arch = "x86_64")]
    {
        assert!(
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma"),
            "the AVX2 tile needs AVX2 and FMA"
        );
        assert!(
            rows.iter().all(|r| r.len() >= bp.len()),
            "tile: A rows too short"
        );
        // SAFETY: AVX2 and FMA are present (checked above); every row of A holds at least
        // `bp.len()` values (checked above) and `bp` holds `bp.len()` rows of 16.
        unsafe { tile_avx2_fma(rows, bp) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (rows, bp);
        unreachable!("the AVX2 tile exists on x86_64 only")
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn tile_avx2_fma(rows: &[&[f32]; 6], bp: &[[f32; gemm::NR]]) -> [[f32; gemm::NR]; 6] {
    use std::arch::x86_64::*;
    let kc = bp.len();
    let a: [*const f32; 6] = std::array::from_fn(|i| rows[i].as_ptr());
    let b = bp.as_ptr() as *const f32;
    let mut c = [_mm256_setzero_ps(); 12];
    for p in 0..kc {
        // SAFETY: `p < kc`: `b` holds `kc * 16` values and each `a[i]` at least `kc` (the
        // caller's checks); unaligned loads.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            for i in 0..6 {
                let av = _mm256_broadcast_ss(&*a[i].add(p));
                c[2 * i] = _mm256_fmadd_ps(av, b0, c[2 * i]);
                c[2 * i + 1] = _mm256_fmadd_ps(av, b1, c[2 * i + 1]);
            }
        }
    }
    let mut out = [[0.0f32; gemm::NR]; 6];
    for (i, row) in out.iter_mut().enumerate() {
        // SAFETY: each row holds 16 f32 (two unaligned 8-wide stores).
        unsafe {
            _mm256_storeu_ps(row.as_mut_ptr(), c[2 * i]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), c[2 * i + 1]);
        }
    }
    out
}

/// A mutably borrowed buffer shared by the members of one pass, each of which forms slices
/// over elements no other member touches (see each use).
struct SharedMut<T> {
    ptr: *mut T,
    len: usize,
}

impl<T> SharedMut<T> {
    fn new(data: &mut [T]) -> Self {
        Self {
            ptr: data.as_mut_ptr(),
            len: data.len(),
        }
    }
}

// SAFETY: members only form disjoint slices (each use says why), `T: Send` values may be
// written from any thread, and the buffer stays mutably borrowed by the caller for the whole
// pass (`Team::run` returns only after every member has finished).
unsafe impl<T: Send> Sync for SharedMut<T> {}

/// Per-worker buffers of [`attention`]: a block of scores and the packed K^T and V of a head.
pub struct AttentionScratch {
    scores: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    context: Vec<f32>,
}

impl AttentionScratch {
    /// Buffers for `tokens` tokens, `head_dim` channels per head and query blocks of `block`.
    pub fn new(tokens: usize, head_dim: usize, block: usize) -> Self {
        Self {
            scores: vec![0.0; block.min(tokens) * tokens],
            keys: vec![0.0; gemm::packed_len(head_dim, tokens)],
            values: vec![0.0; gemm::packed_len(tokens, head_dim)],
            context: vec![0.0; block.min(tokens) * head_dim],
        }
    }
}

/// Multi-head self-attention without masking, on `team`.
///
/// `qkv` holds `batch * tokens` rows of `[q | k | v]` (`3 * heads * head_dim` wide, RoPE
/// already applied); `out` receives `batch * tokens` rows of the heads' outputs side by side
/// (`heads * head_dim` wide). Each (image, head) task packs its K^T and V once, then goes
/// through the queries in blocks of `block` rows so the score block stays in cache. `scratch`
/// holds one [`AttentionScratch`] per team member.
#[allow(clippy::too_many_arguments, reason = "one attention call: its shapes")]
pub fn attention(
    team: &Team,
    qkv: &[f32],
    out: &mut [f32],
    batch: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    block: usize,
    scratch: &mut [AttentionScratch],
) {
    let width = heads * head_dim;
    let ld = 3 * width;
    let members = team.threads();
    assert!(qkv.len() >= batch * tokens * ld, "attention: qkv too small");
    assert!(
        out.len() >= batch * tokens * width,
        "attention: out too small"
    );
    assert!(
        scratch.len() >= members && block > 0,
        "attention: scratch per member"
    );
    let scale = 1.0 / (head_dim as f32).sqrt();
    let shared = SharedMut::new(out);
    let shared = &shared;
    let tasks = batch * heads;
    team.rows(&mut scratch[..members], 1, &|member, mine| {
        let AttentionScratch {
            scores,
            keys,
            values,
            context,
        } = &mut mine[0];
        for task in (member..tasks).step_by(members) {
            let (image, head) = (task / heads, task % heads);
            let base = image * tokens * ld;
            let q = &qkv[base + head * head_dim..];
            // B = K^T (head_dim x tokens): element (r, c) = K[c][r].
            gemm::pack_into(
                &qkv[base + width + head * head_dim..],
                head_dim,
                tokens,
                1,
                ld,
                keys,
            );
            // B = V (tokens x head_dim).
            gemm::pack_into(
                &qkv[base + 2 * width + head * head_dim..],
                tokens,
                head_dim,
                ld,
                1,
                values,
            );
            let mut q0 = 0;
            while q0 < tokens {
                let rows = block.min(tokens - q0);
                let s = &mut scores[..rows * tokens];
                gemm_packed(
                    &q[q0 * ld..],
                    ld,
                    rows,
                    keys,
                    head_dim,
                    tokens,
                    s,
                    tokens,
                    false,
                    scale,
                    Epilogue::None,
                );
                softmax_rows(s, tokens);
                gemm_packed(
                    s,
                    tokens,
                    rows,
                    values,
                    tokens,
                    head_dim,
                    context,
                    head_dim,
                    false,
                    1.0,
                    Epilogue::None,
                );
                for (r, src) in context.chunks_exact(head_dim).take(rows).enumerate() {
                    let at = (image * tokens + q0 + r) * width + head * head_dim;
                    assert!(
                        at + head_dim <= shared.len,
                        "attention: output outside the buffer"
                    );
                    // SAFETY: `at..at + head_dim` lies inside `out` (checked above): row
                    // `q0 + r` of this task's image, this task's head. Each (image, head) task
                    // runs on one member only, so no two members ever form slices over the
                    // same elements.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(shared.ptr.add(at), head_dim) };
                    dst.copy_from_slice(src);
                }
                q0 += rows;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_matches_a_naive_implementation() {
        let (batch, tokens, heads, d) = (2, 9, 3, 4);
        let width = heads * d;
        let qkv: Vec<f32> = (0..batch * tokens * 3 * width)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let mut out = vec![0.0; batch * tokens * width];
        let team = Team::new(2).unwrap();
        let mut scratch: Vec<_> = (0..2)
            .map(|_| AttentionScratch::new(tokens, d, 4))
            .collect();
        attention(
            &team,
            &qkv,
            &mut out,
            batch,
            tokens,
            heads,
            d,
            4,
            &mut scratch,
        );
        let at = |b: usize, t: usize, part: usize, h: usize, j: usize| {
            qkv[(b * tokens + t) * 3 * width + part * width + h * d + j]
        };
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..tokens {
                    let s: Vec<f64> = (0..tokens)
                        .map(|t| {
                            (0..d)
                                .map(|j| (at(b, i, 0, h, j) * at(b, t, 1, h, j)) as f64)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for j in 0..d {
                        let want: f64 = (0..tokens)
                            .map(|t| e[t] / z * at(b, t, 2, h, j) as f64)
                            .sum();
                        let got = out[(b * tokens + i) * width + h * d + j] as f64;
                        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_dispatched_kernels_agree_with_the_baseline() {
        let x: Vec<f32> = (0..96).map(|i| (i as f32 * 0.21).sin() * 4.0).collect();
        let mut a = x.clone();
        softmax_rows(&mut a, 32);
        let mut b = x.clone();
        kernels::softmax_rows(&mut b, 32);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-7);
        }
        // The dispatched product against the baseline tile height.
        let (m, k, n) = (23, 70, 40);
        let av: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let bv: Vec<f32> = (0..k * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let packed = gemm::PackedB::pack(&bv, k, n);
        let mut c1 = vec![0.0; m * n];
        let mut c2 = vec![0.0; m * n];
        gemm_packed(
            &av,
            k,
            m,
            &packed.data,
            k,
            n,
            &mut c1,
            n,
            false,
            1.0,
            Epilogue::None,
        );
        gemm::gemm::<4>(
            &av,
            k,
            m,
            &packed.data,
            k,
            n,
            &mut c2,
            n,
            false,
            1.0,
            Epilogue::None,
            None,
        );
        for (p, q) in c1.iter().zip(&c2) {
            assert!((p - q).abs() < 1e-4);
        }
    }

    #[test]
    fn a_team_runs_every_member_once_per_pass_and_splits_rows_disjointly() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        for threads in [1, 2, 3] {
            let team = Team::new(threads).unwrap();
            let calls = AtomicUsize::new(0);
            for _ in 0..200 {
                team.run(&|m| {
                    assert!(m < threads);
                    calls.fetch_add(1, Ordering::SeqCst);
                });
            }
            assert_eq!(calls.load(Ordering::SeqCst), 200 * threads);
            let mut data = vec![0u32; 7 * 5];
            team.rows(&mut data, 5, &|first, block| {
                for (r, row) in block.chunks_exact_mut(5).enumerate() {
                    for v in row {
                        *v += (first + r) as u32 + 1;
                    }
                }
            });
            for (r, row) in data.chunks_exact(5).enumerate() {
                assert!(row.iter().all(|v| *v == r as u32 + 1), "row {r}: {row:?}");
            }
        }
    }

    #[test]
    fn a_panic_on_a_member_reaches_the_caller_and_the_team_survives() {
        let team = Team::new(2).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(&|m| assert!(m != 1, "member 1 fails"));
        }));
        assert!(r.is_err());
        let ok = std::sync::atomic::AtomicUsize::new(0);
        team.run(&|_| {
            ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        assert_eq!(ok.into_inner(), 2);
    }
}
