import Foundation

/// Splits large elementwise work across threads. The thread count is OpenBLAS's (one setting,
/// `MENAGERIE_THREADS` / `--threads`, governs both), so products and loops never oversubscribe.
public enum Parallel {
    /// Threads used for elementwise loops.
    public static var threads: Int { GEMM.threads }

    /// Calls `body` on contiguous chunks covering 0..<count: one chunk per thread when there are at
    /// least `grain` items per thread, else the whole range on the calling thread.
    @inline(__always)
    public static func chunks(_ count: Int, grain: Int = 1 << 15, _ body: (Range<Int>) -> Void) {
        let t = Swift.min(threads, count / Swift.max(grain, 1))
        if t <= 1 {
            body(0..<count)
            return
        }
        let per = (count + t - 1) / t
        withoutActuallyEscaping(body) { body in
            let box = UncheckedBox(body)
            DispatchQueue.concurrentPerform(iterations: t) { i in
                let lo = i * per, hi = Swift.min(count, lo + per)
                if lo < hi { box.value(lo..<hi) }
            }
        }
    }
}

/// Carries a non-Sendable value (a buffer's base pointer) into `Parallel.chunks`, whose workers
/// touch disjoint parts of it.
// @unchecked by design: it carries a buffer pointer into Parallel.chunks, whose workers write disjoint ranges of it.
public struct UncheckedBox<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}

extension Tensor {
    /// A float32 tensor whose every element `body` writes (the memory is not cleared first).
    public static func makeUninitialized(_ shape: [Int], _ body: (UnsafeMutablePointer<Float>) -> Void) -> Tensor {
        let storage = TensorStorage(uninitialized: shape.reduce(1, *) * 4)
        body(storage.bytes.assumingMemoryBound(to: Float.self))
        return Tensor(dtype: .float32, shape: shape, exactStorage: storage)
    }
}

/// Σ p[i] over `n` floats (16 lanes, then a scalar tail).
@inlinable
public func vectorSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var s = SIMD16<Float>()
    var i = 0
    while i + 16 <= n {
        s += UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self)
        i += 16
    }
    var t = s.sum()
    while i < n {
        t += p[i]
        i += 1
    }
    return t
}

/// Σ (p[i] − c)² over `n` floats.
@inline(__always)
func vectorCentredSquares(_ p: UnsafePointer<Float>, _ n: Int, _ c: Float) -> Float {
    var q = SIMD16<Float>()
    let cv = SIMD16<Float>(repeating: c)
    var i = 0
    while i + 16 <= n {
        let d = UnsafeRawPointer(p + i).loadUnaligned(as: SIMD16<Float>.self) - cv
        q += d * d
        i += 16
    }
    var t = q.sum()
    while i < n {
        let d = p[i] - c
        t += d * d
        i += 1
    }
    return t
}

/// Prepares the next items on a worker thread while the caller works on the current one: image
/// decoding and resizing overlap a model's forward pass. At most `depth` prepared items wait (the
/// memory is bounded; 0 prepares each item in turn on the calling thread), items are consumed in order, and the first error from either side stops
/// both and is rethrown — after the worker has stopped, so nothing runs on after the call returns.
public enum Prefetch {
    public static func forEach<Item, Prepared>(
        _ items: [Item], depth: Int = 2, prepare: @escaping (Item) throws -> Prepared, consume: (Item, Prepared) throws -> Void
    ) throws {
        guard !items.isEmpty else { return }
        guard depth > 0 else {
            for item in items { try consume(item, try prepare(item)) }
            return
        }
        // The worker reaches the items and `prepare` only through the state, which the caller
        // keeps alive until the worker has signalled `done`.
        let state = PrefetchState<Item, Prepared>(items: items, prepare: prepare, depth: depth)
        let worker = Thread {
            for i in state.items.indices {
                state.slots.wait()
                if state.stopped { break }
                let r = Result { try state.prepare(state.items[i]) }
                state.put(i, r)
                if case .failure = r { break }
            }
            state.done.signal()
        }
        worker.stackSize = 8 << 20
        worker.start()
        defer {
            state.stop()
            state.done.wait()
        }
        for (i, item) in items.enumerated() {
            try consume(item, try state.take(i).get())
        }
    }
}

/// The shared state of one `Prefetch.forEach`: prepared results by index, a semaphore per side.
private final class PrefetchState<Item, Prepared>: @unchecked Sendable {
    let items: [Item]
    let prepare: (Item) throws -> Prepared
    let slots: DispatchSemaphore
    let ready = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    private let lock = NSLock()
    private var results: [Int: Result<Prepared, Error>] = [:]
    private var stopFlag = false
    private let depth: Int

    init(items: [Item], prepare: @escaping (Item) throws -> Prepared, depth: Int) {
        self.items = items
        self.prepare = prepare
        self.depth = depth
        slots = DispatchSemaphore(value: depth)
    }

    var stopped: Bool { lock.withLock { stopFlag } }

    func put(_ i: Int, _ r: Result<Prepared, Error>) {
        lock.withLock { results[i] = r }
        ready.signal()
    }

    func take(_ i: Int) -> Result<Prepared, Error> {
        ready.wait()
        let r = lock.withLock { results.removeValue(forKey: i)! }
        slots.signal()
        return r
    }

    /// Stops the worker (wakes it if it waits for a free slot).
    func stop() {
        lock.withLock { stopFlag = true }
        for _ in 0...depth { slots.signal() }
    }
}
