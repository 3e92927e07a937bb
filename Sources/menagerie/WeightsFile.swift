import Formats
import Foundation
import MenagerieHost
import Tensors

/// One weights file of any format Menagerie reads (safetensors, a PyTorch checkpoint, a plain
/// pickle of arrays), seen the same way by `inspect` and `convert`.
struct WeightsFile {
    struct Item: Encodable {
        /// The tensor's full name in the file (its path in the pickled object for torch files).
        let name: String
        let dtype: String
        let shape: [Int]
        let bytes: Int
    }

    let path: String
    let format: String
    let items: [Item]
    /// For torch files: the key the state dict is wrapped in, and whether "module." is dropped.
    let wrapper: String?
    let modulePrefixed: Bool
    private let torch: TorchFile?
    private let safetensors: SafeTensorsFile?

    init(path: String) throws {
        self.path = path
        do {
            if Checkpoint.torchExtensions.contains((path as NSString).pathExtension.lowercased()) {
                let f = try TorchFile(path: path)
                torch = f
                safetensors = nil
                format = f.format == "torch" ? "PyTorch checkpoint" : "pickle"
                items = f.names.map { n in
                    let t = f.tensors[n]!
                    return Item(name: n, dtype: t.dtype.rawValue, shape: t.shape, bytes: t.count * t.dtype.size)
                }
                wrapper = f.wrapper
                modulePrefixed = f.modulePrefixed
            } else {
                let f = try SafeTensorsFile(path: path)
                safetensors = f
                torch = nil
                format = "safetensors"
                items = try f.names.map { n in
                    let e = try f.entry(n)
                    return Item(name: n, dtype: e.fileDType == "BOOL" ? "bool" : e.fileDType.lowercased(), shape: e.shape, bytes: e.end - e.begin)
                }
                wrapper = nil
                modulePrefixed = false
            }
        } catch let e as FormatError {
            throw HostError(.failed, "\(e)")
        }
    }

    /// The state dict's names mapped to full names (torch's wrapper and prefix rule; `key` overrides it).
    func stateDict(key: String?) throws -> [String: String] {
        if let torch {
            do { return try torch.stateDict(key: key) } catch { throw HostError(.usage, "\(error)") }
        }
        guard key == nil else { throw HostError(.usage, "--key applies to PyTorch checkpoints and pickles; \(path) is \(format)") }
        return Dictionary(uniqueKeysWithValues: items.map { ($0.name, $0.name) })
    }

    /// The tensor's bytes as stored, contiguous (a u8 tensor for i16/i8).
    func raw(_ name: String) throws -> Tensor {
        do {
            if let torch { return try torch.rawTensor(name) }
            return try safetensors!.withBytes(name) { b in
                var t = Tensor(zeros: .uint8, shape: [b.count])
                t.withUnsafeMutableBytes { $0.copyMemory(from: b) }
                return t
            }
        } catch let e as FormatError { throw HostError(.failed, "\(e)") }
    }

    /// The tensor in Menagerie's types (for converting floating-point dtypes).
    func tensor(_ name: String) throws -> Tensor {
        do { return try torch?.tensor(name) ?? safetensors!.tensor(name) } catch let e as FormatError { throw HostError(.failed, "\(e)") }
    }
}
