import Foundation
import Tensors
import Testing

/// `Prefetch.forEach`: the decode-ahead pipeline of bioclip2's embed and predict.
@Suite struct PrefetchTests {
    final class Counter: @unchecked Sendable {
        let lock = NSLock()
        var prepared = 0, waiting = 0, maxWaiting = 0
        func didPrepare() {
            lock.withLock {
                prepared += 1
                waiting += 1
                maxWaiting = max(maxWaiting, waiting)
            }
        }
        func didConsume() { lock.withLock { waiting -= 1 } }
        var snapshot: (Int, Int) { lock.withLock { (prepared, maxWaiting) } }
    }

    struct Boom: Error, Equatable { let at: Int }

    /// In order, every item once, with at most `depth` prepared items waiting beyond the one in use.
    @Test(arguments: [1, 2, 4]) func keepsOrderAndBoundsTheQueue(depth: Int) throws {
        let counter = Counter()
        var seen: [Int] = []
        try Prefetch.forEach(
            Array(0..<60), depth: depth,
            prepare: { i -> Int in
                if i % 7 == 0 { usleep(2_000) }
                counter.didPrepare()
                return i * 2
            }
        ) { i, doubled in
            counter.didConsume()
            if i % 5 == 0 { usleep(3_000) } // a slow consumer lets the worker run ahead
            seen.append(doubled)
        }
        #expect(seen == (0..<60).map { $0 * 2 })
        let (prepared, maxWaiting) = counter.snapshot
        // The item the consumer has just taken frees its slot before `didConsume` counts it, so the
        // count can touch depth + 1 for an instant; without the bound it would reach tens.
        #expect(prepared == 60 && maxWaiting <= depth + 1 && maxWaiting >= 1, "prepared \(prepared), at most \(maxWaiting) waiting")
    }

    /// An error while preparing item 7 is rethrown once items 0…6 are consumed.
    @Test func aPreparationErrorStopsTheLoop() {
        var consumed: [Int] = []
        #expect(throws: Boom(at: 7)) {
            try Prefetch.forEach(
                Array(0..<20), depth: 2,
                prepare: { i -> Int in
                    if i == 7 { throw Boom(at: 7) }
                    return i
                }
            ) { i, _ in consumed.append(i) }
        }
        #expect(consumed == Array(0..<7))
    }

    /// An error of the consumer stops the worker: nothing is prepared after the call returns, and
    /// at most `depth` + 1 items beyond the failing one were prepared.
    @Test func aConsumerErrorStopsTheWorker() throws {
        let counter = Counter()
        #expect(throws: Boom(at: 3)) {
            try Prefetch.forEach(
                Array(0..<1000), depth: 2,
                prepare: { i -> Int in
                    counter.didPrepare()
                    return i
                }
            ) { i, _ in
                if i == 3 { throw Boom(at: 3) }
            }
        }
        let after = counter.snapshot.0
        usleep(20_000)
        #expect(counter.snapshot.0 == after && after <= 3 + 1 + 2 + 1, "prepared \(after) items, then \(counter.snapshot.0)")
    }

    /// depth 0: each item prepared in turn on the calling thread.
    @Test func depthZeroRunsInTurn() throws {
        let caller = Thread.current
        var order: [String] = []
        try Prefetch.forEach(
            [1, 2, 3], depth: 0,
            prepare: { i -> Int in
                #expect(Thread.current == caller)
                return i
            }
        ) { i, _ in order.append("c\(i)") }
        #expect(order == ["c1", "c2", "c3"])
    }
}
