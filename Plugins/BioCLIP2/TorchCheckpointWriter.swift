import Formats
import Foundation

/// Writes a float32 state dict in torch's zip checkpoint layout (what `torch.save(state_dict)`
/// writes: `archive/data.pkl` pickling an OrderedDict of `_rebuild_tensor_v2` calls over persistent
/// storage ids, `archive/data/<i>`, `archive/byteorder`, `archive/version`; records stored and
/// 64-byte aligned), streaming one tensor at a time. For the load benchmark: Menagerie reads such
/// files, it does not otherwise write them.
struct TorchCheckpointWriter {
    struct Tensor {
        let name: String
        let shape: [Int]
    }

    /// `fill(i, buffer)` fills tensor i's float32 values.
    static func write(_ tensors: [Tensor], to path: String, fill: (Int, UnsafeMutableBufferPointer<Float>) -> Void) throws {
        var pickle: [UInt8] = [0x80, 0x02]
        func global(_ module: String, _ name: String) { pickle += [0x63] + Array("\(module)\n\(name)\n".utf8) }
        func string(_ s: String) { pickle += [0x58] + le32(s.utf8.count) + Array(s.utf8) }
        func int(_ n: Int) { pickle += [0x4A] + le32(n) }
        func ints(_ values: [Int]) {
            pickle.append(0x28)
            values.forEach(int)
            pickle.append(0x74)
        }
        global("collections", "OrderedDict")
        pickle += [0x29, 0x52]
        for (i, t) in tensors.enumerated() {
            let count = t.shape.reduce(1, *)
            var strides = [Int](repeating: 1, count: t.shape.count)
            for k in t.shape.indices.reversed().dropFirst() { strides[k] = strides[k + 1] * t.shape[k + 1] }
            string(t.name)
            global("torch._utils", "_rebuild_tensor_v2")
            pickle.append(0x28)
            pickle.append(0x28)
            string("storage")
            global("torch", "FloatStorage")
            string(String(i))
            string("cpu")
            int(count)
            pickle += [0x74, 0x51]
            int(0)
            ints(t.shape)
            ints(strides)
            pickle.append(0x89)
            global("collections", "OrderedDict")
            pickle += [0x29, 0x52]
            pickle += [0x74, 0x52, 0x73] // TUPLE, REDUCE, SETITEM
        }
        pickle.append(0x2E)

        var central: [UInt8] = [], offset = 0, entries = 0
        try AtomicFile.stream(to: path) { write in
            func record(_ name: String, _ body: UnsafeRawBufferPointer) throws {
                guard offset + body.count < 0xFFFF_0000 else { throw FormatError(path: path, "more than 4 GiB: this writer makes no ZIP64 archives") }
                let nameBytes = Array(("archive/" + name).utf8)
                // Pad the local header's extra field so that the data starts on a 64-byte boundary.
                let pad = (64 - (offset + 30 + nameBytes.count + 4) % 64) % 64
                let extra: [UInt8] = le16(0x4B46) + le16(pad) + [UInt8](repeating: 0, count: pad)
                let crc = ZipArchive.crc(body)
                var local: [UInt8] = le32(0x0403_4B50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21)
                local += le32(Int(crc)) + le32(body.count) + le32(body.count) + le16(nameBytes.count) + le16(extra.count)
                local += nameBytes + extra
                try local.withUnsafeBytes { try write($0) }
                try write(body)
                central += le32(0x0201_4B50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0x21)
                central += le32(Int(crc)) + le32(body.count) + le32(body.count) + le16(nameBytes.count) + le16(0) + le16(0)
                central += le16(0) + le16(0) + le32(0) + le32(offset) + nameBytes
                offset += local.count + body.count
                entries += 1
            }
            try pickle.withUnsafeBytes { try record("data.pkl", $0) }
            try Array("little".utf8).withUnsafeBytes { try record("byteorder", $0) }
            for (i, t) in tensors.enumerated() {
                let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, t.shape.reduce(1, *)))
                defer { buffer.deallocate() }
                fill(i, buffer)
                try record("data/\(i)", UnsafeRawBufferPointer(start: buffer.baseAddress, count: t.shape.reduce(1, *) * 4))
            }
            try Array("3\n".utf8).withUnsafeBytes { try record("version", $0) }
            let end: [UInt8] = le32(0x0605_4B50) + le16(0) + le16(0) + le16(entries) + le16(entries) + le32(central.count) + le32(offset) + le16(0)
            try (central + end).withUnsafeBytes { try write($0) }
        }
    }

    static func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
    static func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8((v >> (8 * $0)) & 0xFF) } }
}
