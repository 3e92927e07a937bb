import Formats
import Foundation
import Tensors
import TestSupport
import Testing

/// .npy headers from outside: shape products, header lengths and non-regular files.
@Suite struct NPYLimitsTests {
    let dir = TempDir("npylimits")

    func npy(header: String, version: UInt8 = 1, data: Data = Data()) -> Data {
        var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, version, 0])
        let n = header.utf8.count
        d.append(contentsOf: version == 1 ? [UInt8(n & 0xFF), UInt8(n >> 8)] : [UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24)])
        d.append(contentsOf: Array(header.utf8))
        d.append(data)
        return d
    }

    @Test func hostileHeadersAreRefusedWithTheReason() throws {
        let cases: [(String, Data, String)] = [
            (
                "strides overflow behind a zero",
                npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4611686018427387904, 4611686018427387904), }"),
                "more elements than can be addressed"
            ),
            (
                "product overflow", npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296), }"),
                "more elements than can be addressed"
            ),
            (
                "bytes overflow", npy(header: "{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952,), }"),
                "too large to hold in memory"
            ),
            (
                "more than the file", npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000), }"),
                "needs 4000000000 bytes of data; the file has 0"
            ),
            ("negative", npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }"), "bad dimension '-1'"),
            (
                "header over numpy's limit",
                npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }" + String(repeating: " ", count: 20_000), version: 2),
                "exceeds numpy's limit of 10000 bytes"
            ),
            ("header past the end", npy(header: "{'descr': '<f4'").prefix(14), "truncated or non-text .npy header"),
        ]
        for (label, bytes, message) in cases {
            do {
                _ = try NPY.decode(bytes, path: "x.npy")
                Issue.record("\(label): accepted")
            } catch let e as FormatError {
                #expect(e.description.contains(message), "\(label): \(e)")
            }
        }
        // An empty array with a zero dimension is fine.
        let empty = try NPY.decode(npy(header: "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }"))
        #expect(empty.shape == [0, 3])
    }

    /// numpy's own files (`Tests/Fixtures/npy`, np.save) shortened by 1…8 bytes are each refused: the
    /// data must hold shape × itemsize bytes, and one byte short is as wrong as half (a check off by
    /// one would read past the end of the file).
    @Test func everyCutFromTheEndIsRefused() throws {
        for name in ["f32_2x3", "f64_scalar", "i64_4", "u8_2x2x3", "bool_3"] {
            let whole = try Data(contentsOf: URL(fileURLWithPath: TestPaths.fixtures + "/npy/\(name).npy"))
            _ = try NPY.decode(whole, path: name)
            for cut in 1...8 {
                #expect(throws: FormatError.self, "\(name) minus \(cut) bytes") { try NPY.decode(whole.prefix(whole.count - cut), path: name) }
            }
        }
    }

    @Test func fifosAreRefused() throws {
        let path = dir.path + "/fifo.npy"
        #expect(mkfifo(path, 0o600) == 0)
        do {
            _ = try NPY.read(path: path)
            Issue.record("accepted")
        } catch let e as FormatError {
            #expect(e.description.contains("FIFO"), "\(e)")
        }
    }
}
