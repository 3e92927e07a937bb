import Foundation

/// The allow-list of the restricted unpickler and what each allowed global builds. Nothing here
/// calls into Python or runs anything named by the file: each allowed name maps to a fixed
/// constructor of a `PickleValue`, with its arguments checked.
///
/// torch archives: `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` /
/// `_rebuild_parameter_with_state`, `torch.*Storage` and `torch.UntypedStorage` (inside persistent
/// ids), `torch.Size`, torch dtypes, `collections.OrderedDict`, `builtins.set`/`frozenset`,
/// `_codecs.encode` (protocol 2's bytes). Plain pickles: the same containers plus numpy arrays
/// (`numpy.core.multiarray._reconstruct` or `numpy._core…`, `numpy.ndarray`, `numpy.dtype`,
/// `scalar`, `numpy.core.numeric._frombuffer`) and torch tensors as `pickle.dump(tensor)` writes
/// them (`torch._utils._rebuild_tensor_v2` of `torch.storage._load_from_bytes(b)`, where `b` is the
/// storage in torch's legacy serialization, parsed here by `legacyStorage`). Instances of the
/// classes a caller names (`objectClasses`, e.g. scikit-learn's KMeans) are kept as their state
/// dict: nothing of theirs is constructed or run. Anything else is refused by name.
enum PickleGlobals {
    static let containers: Set<String> = [
        "collections.OrderedDict", "builtins.set", "builtins.frozenset", "__builtin__.set",
        "__builtin__.frozenset", "_codecs.encode",
    ]
    static let torch: Set<String> = [
        "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state", "torch.Size", "torch.UntypedStorage",
        "torch.storage.UntypedStorage",
    ]
    static let numpy: Set<String> = [
        "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct", "numpy.ndarray",
        "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
        "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer",
    ]

    /// Allowed in plain pickles too: what `pickle.dump(a_torch_tensor)` writes.
    static let pickledTensor: Set<String> = ["torch._utils._rebuild_tensor_v2", "torch.storage._load_from_bytes"]

    static func resolve(module: String, name: String, flavor: Unpickler.Flavor, objects: Set<String> = [], path: String) throws -> PickleValue {
        let full = module + "." + name
        if containers.contains(full) || objects.contains(full) { return .global(full) }
        if flavor == .plain, pickledTensor.contains(full) { return .global(full) }
        if flavor == .torch {
            if torch.contains(full) { return .global(full) }
            if module == "torch", StoredDType.torchStorages[name] != nil { return .global(full) }
            if module == "torch", let d = StoredDType.torchDTypes[name] { return .torchDType(d) }
        } else if numpy.contains(full) {
            return .global(full)
        }
        let shown = full.count > 200 ? String(full.prefix(200)) + "…" : full
        throw FormatError(
            path: path,
            "refusing global '\(shown)' — only tensors and containers are loaded"
                + (flavor == .plain && full.hasPrefix("torch.") ? " (torch objects are read from torch's zip checkpoints, not plain pickles)" : ""))
    }

    // MARK: argument helpers

    static func items(_ v: PickleValue, _ u: Unpickler) -> [PickleValue]? {
        switch v {
        case .tuple(let i): u.result.tuples[i]
        case .list(let i): u.result.lists[i]
        default: nil
        }
    }
    static func arguments(_ v: PickleValue, of name: String, counts: ClosedRange<Int>, _ u: Unpickler) throws -> [PickleValue] {
        guard case .tuple(let i) = v, counts.contains(u.result.tuples[i].count) else {
            throw u.failAt(
                "\(name) called with \(v.kind == "tuple" ? "\(items(v, u)!.count) arguments" : "a \(v.kind)"); expected \(counts.lowerBound == counts.upperBound ? "\(counts.lowerBound)" : "\(counts.lowerBound)–\(counts.upperBound)") arguments"
            )
        }
        return u.result.tuples[i]
    }
    static func ints(_ v: PickleValue, what: String, _ u: Unpickler) throws -> [Int] {
        guard let list = items(v, u) else { throw u.failAt("\(what) is a \(v.kind), not a tuple of integers") }
        guard list.count <= 64 else { throw u.failAt("\(what) has \(list.count) dimensions (at most 64 are read)") }
        return try list.map {
            guard case .int(let n) = $0 else { throw u.failAt("\(what) holds a \($0.kind), not an integer") }
            return n
        }
    }

    // MARK: REDUCE, NEWOBJ, BUILD

    static func call(_ callable: PickleValue, _ args: PickleValue, in u: inout Unpickler) throws -> PickleValue {
        guard case .global(let name) = callable else { throw u.failAt("calls a \(callable.kind), which is not an allowed function") }
        switch name {
        case "torch._utils._rebuild_tensor_v2":
            let a = try arguments(args, of: name, counts: 6...7, u)
            guard case .storage(let storage, let dtype) = a[0] else { throw u.failAt("\(name): the first argument is a \(a[0].kind), not a storage") }
            guard case .int(let offset) = a[1] else { throw u.failAt("\(name): the storage offset is a \(a[1].kind)") }
            let shape = try ints(a[2], what: "the tensor's size", u), strides = try ints(a[3], what: "the tensor's stride", u)
            return try tensor(storage: storage, dtype: dtype, shape: shape, strides: strides, offset: offset, in: &u)
        case "torch.storage._load_from_bytes":
            let a = try arguments(args, of: name, counts: 1...1, u)
            guard case .bytes(let blob) = a[0] else { throw u.failAt("\(name) of a \(a[0].kind), not bytes") }
            return try legacyStorage(blob, in: &u)
        case "torch._utils._rebuild_parameter":
            let a = try arguments(args, of: name, counts: 3...3, u)
            guard case .tensor = a[0] else { throw u.failAt("\(name): the data is a \(a[0].kind), not a tensor") }
            return a[0]
        case "torch._utils._rebuild_parameter_with_state":
            let a = try arguments(args, of: name, counts: 4...4, u)
            guard case .tensor = a[0] else { throw u.failAt("\(name): the data is a \(a[0].kind), not a tensor") }
            return a[0]
        case "torch.Size":
            let a = try arguments(args, of: name, counts: 1...1, u)
            return u.newTuple(try ints(a[0], what: "torch.Size", u).map { .int($0) })
        case "collections.OrderedDict":
            let a = try arguments(args, of: name, counts: 0...1, u)
            u.result.dicts.append(PickleDict())
            let d = PickleValue.dict(u.result.dicts.count - 1)
            if let pairs = a.first {
                guard let list = items(pairs, u) else { throw u.failAt("OrderedDict of a \(pairs.kind)") }
                for p in list {
                    guard let kv = items(p, u), kv.count == 2 else { throw u.failAt("OrderedDict item is not a pair") }
                    try u.setItems(of: d, kv)
                }
            }
            return d
        case "builtins.set", "builtins.frozenset", "__builtin__.set", "__builtin__.frozenset":
            let a = try arguments(args, of: name, counts: 0...1, u)
            var elements: [PickleValue] = []
            if let v = a.first {
                guard let list = items(v, u) else { throw u.failAt("\(name) of a \(v.kind)") }
                elements = list
            }
            u.result.sets.append(elements)
            return .set(u.result.sets.count - 1)
        case "_codecs.encode":
            // Protocol 2 writes bytes as _codecs.encode(text, 'latin1'), one character per byte.
            let a = try arguments(args, of: name, counts: 2...2, u)
            guard case .string(let text) = a[0], case .string(let encoding) = a[1], ["latin1", "latin-1"].contains(encoding) else {
                throw u.failAt("_codecs.encode is only read as (str, 'latin1'), the way protocol 2 stores bytes")
            }
            var data = Data(capacity: text.unicodeScalars.count)
            for s in text.unicodeScalars {
                guard s.value < 256 else { throw u.failAt("_codecs.encode: a character beyond latin-1") }
                data.append(UInt8(s.value))
            }
            u.result.blobs.append(.owned(data))
            u.result.blobCounts.append(data.count)
            return .bytes(u.result.blobs.count - 1)
        case "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct":
            let a = try arguments(args, of: name, counts: 3...3, u)
            guard case .global("numpy.ndarray") = a[0] else { throw u.failAt("\(name) of a \(a[0].kind), not numpy.ndarray") }
            u.result.tensors.append(nil) // filled by BUILD
            return .tensor(u.result.tensors.count - 1)
        case "numpy.dtype":
            let a = try arguments(args, of: name, counts: 1...3, u)
            guard case .string(let code) = a[0] else { throw u.failAt("numpy.dtype of a \(a[0].kind)") }
            u.dtypes.append((code, "|"))
            return .numpyDType(u.dtypes.count - 1)
        case "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar":
            let a = try arguments(args, of: name, counts: 2...2, u)
            return try array(dtype: a[0], shape: [], fortran: false, data: a[1], in: &u)
        case "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer":
            let a = try arguments(args, of: name, counts: 4...4, u)
            let shape = try ints(a[2], what: "the array's shape", u)
            guard case .string(let order) = a[3], order == "C" || order == "F" else { throw u.failAt("_frombuffer: order is not 'C' or 'F'") }
            return try array(dtype: a[1], shape: shape, fortran: order == "F", data: a[0], in: &u)
        default:
            throw u.failAt("'\(name)' cannot be called (it is only allowed as an argument)")
        }
    }

    static func instantiate(_ cls: PickleValue, _ args: PickleValue, in u: inout Unpickler) throws -> PickleValue {
        if case .global(let name) = cls, u.objectClasses.contains(name) {
            // cls.__new__(cls): an empty shell whose state BUILD sets; its constructor never runs.
            guard let a = items(args, u), a.isEmpty else { throw u.failAt("NEWOBJ of '\(name)' with arguments: only an argument-less instance is read") }
            u.result.objects.append((name, nil))
            return .object(u.result.objects.count - 1)
        }
        guard case .global(let name) = cls, ["collections.OrderedDict", "builtins.set", "builtins.frozenset"].contains(name) else {
            throw u.failAt("NEWOBJ of \(cls.kind): only OrderedDict and set are built that way")
        }
        return try call(cls, args, in: &u)
    }

    static func build(_ target: PickleValue, state: PickleValue, in u: inout Unpickler) throws {
        switch target {
        case .dict:
            return // an OrderedDict's attributes (a state dict's `_metadata`): not part of its items
        case .tensor(let i) where u.result.tensors[i] == nil:
            // ndarray.__setstate__((version, shape, dtype, is_fortran, data)); the version may be absent.
            guard var s = items(state, u) else { throw u.failAt("numpy array state is a \(state.kind)") }
            if s.count == 5 { s.removeFirst() }
            guard s.count == 4, case .bool(let fortran) = s[2] else { throw u.failAt("numpy array state is not (shape, dtype, fortran, data)") }
            let shape = try ints(s[0], what: "the array's shape", u)
            guard case .tensor(let made) = try array(dtype: s[1], shape: shape, fortran: fortran, data: s[3], in: &u) else { return }
            u.result.tensors[i] = u.result.tensors[made]
        case .object(let i):
            guard u.result.objects[i].state == nil, case .dict = state else {
                throw u.failAt("the state of a '\(u.result.objects[i].className)' must be one dict (\(state.kind) given, or set twice)")
            }
            u.result.objects[i].state = state
        case .numpyDType(let i):
            // dtype.__setstate__((version, byteorder, …))
            guard let s = items(state, u), s.count >= 2, case .string(let order) = s[1], let c = order.first, order.count == 1 else {
                throw u.failAt("numpy.dtype state without a byte order")
            }
            u.dtypes[i].order = c
        default:
            throw u.failAt("BUILD on a \(target.kind) is not allowed — only tensors and containers are loaded")
        }
    }

    // MARK: storages and tensors

    /// torch's persistent id `('storage', storage_type, key, location, numel)`.
    static func persistentLoad(_ pid: PickleValue, in u: inout Unpickler) throws -> PickleValue {
        guard u.flavor == .torch, let load = u.loadStorage else { throw u.failAt("a persistent id in a plain pickle: not a torch checkpoint record") }
        // torch's legacy format adds a sixth item, the view metadata (None unless the storage is a view).
        guard let p = items(pid, u), p.count == 5 || (p.count == 6 && p[5] == .none), case .string("storage") = p[0], case .global(let type) = p[1],
            case .string(let key) = p[2], case .int(let numel) = p[4]
        else {
            throw u.failAt("a persistent id that is not ('storage', type, key, location, numel[, None])")
        }
        let typeName = String(type.dropFirst("torch.".count))
        let dtype: StoredDType
        if let d = StoredDType.torchStorages[typeName] {
            dtype = d
        } else if type.hasSuffix("UntypedStorage") {
            dtype = .u8
        } else {
            throw u.failAt("'\(type)' is not a storage type")
        }
        guard numel >= 0, numel < 1 << 56 else { throw u.failAt("storage '\(key)' has \(numel) elements") }
        if let s = u.storageIndex[key] {
            guard u.result.storages[s].count >= numel * dtype.size else {
                throw u.fail("storage '\(key)' is named with \(numel) elements of \(dtype.rawValue) but holds \(u.result.storages[s].count) bytes")
            }
            return .storage(s, dtype)
        }
        let bytes = try load(key, dtype, numel)
        u.result.storages.append(bytes)
        u.storageIndex[key] = u.result.storages.count - 1
        return .storage(u.result.storages.count - 1, dtype)
    }

    /// `torch.storage._load_from_bytes(b)`: `b` is one storage in torch's legacy serialization —
    /// pickles of the magic number, the protocol version (1001) and the system info (little-endian
    /// required), the storage itself (a persistent id ('storage', torch.<Type>Storage, key, location,
    /// numel, None)), the list of storage keys ([key]); then numel as a little-endian int64 and the
    /// numel elements' bytes. Each part is read by a nested restricted unpickler, every length checked.
    static func legacyStorage(_ blob: Int, in u: inout Unpickler) throws -> PickleValue {
        let count = u.result.blobCounts[blob]
        let what = "torch.storage._load_from_bytes (pickle byte \(u.position))", path = u.path
        func parse(_ b: UnsafeRawBufferPointer) throws -> (dataAt: Int, dtype: StoredDType, key: String, bytes: Int) {
            let magic: [UInt8] = [0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19, 0x2E]
            guard b.count >= magic.count, zip(b, magic).allSatisfy({ $0 == $1 }) else {
                throw u.fail("\(what): the bytes do not start with torch's legacy magic number: not a pickled torch storage, or corrupt")
            }
            var at = magic.count
            // The nested pickles are read as torch's (no _load_from_bytes inside: no recursion).
            func next(_ load: ((String, StoredDType, Int) throws -> StorageBytes)? = nil) throws -> PickleResult {
                var inner = Unpickler(bytes: UnsafeRawBufferPointer(rebasing: b[at...]), base: 0, path: path, flavor: .torch, loadStorage: load)
                do {
                    let r = try inner.run()
                    at += inner.position
                    return r
                } catch let e as FormatError { throw u.fail("\(what), byte \(at) of its data: \(e.problem)") }
            }
            guard case .int(1001) = try next().root else { throw u.fail("\(what): the legacy protocol version is not 1001") }
            let info = try next()
            guard case .dict(let d) = info.root, let i = info.dicts[d].index[.string("little_endian")], info.dicts[d].values[i] == .bool(true) else {
                throw u.fail("\(what): the storage was not saved little-endian (sys_info.little_endian is not True); only little-endian data is read")
            }
            var requested: (key: String, numel: Int)? = nil
            let object = try next { key, dtype, numel in
                guard requested == nil else { throw FormatError(path: path, "\(what): holds more than one storage; one is read") }
                requested = (key, numel)
                return StorageBytes(source: .owned(Data()), count: numel * dtype.size, key: key)
            }
            guard case .storage(_, let dtype) = object.root, let (key, numel) = requested else {
                throw u.fail("\(what): holds a \(object.root.kind), not a storage")
            }
            let keys = try next()
            guard case .list(let l) = keys.root, keys.lists[l] == [.string(key)] else {
                throw u.fail("\(what): the list of storage keys is not ['\(key)']: corrupt")
            }
            guard b.count - at >= 8 else { throw u.fail("\(what): the storage's size is missing: truncated") }
            let stored = Int64(littleEndian: b.loadUnaligned(fromByteOffset: at, as: Int64.self))
            guard stored == Int64(numel) else { throw u.fail("\(what): the storage holds \(stored) elements, its header says \(numel): corrupt") }
            guard numel * dtype.size <= b.count - at - 8 else {
                throw u.fail("\(what): \(numel) elements of \(dtype.rawValue) need \(numel * dtype.size) bytes, \(b.count - at - 8) follow: truncated")
            }
            return (at + 8, dtype, key, numel * dtype.size)
        }
        let storage: StorageBytes, dtype: StoredDType
        switch u.result.blobs[blob] {
        case .mapped(let offset, _):
            let start = offset - u.base
            guard start >= 0, count <= u.bytes.count - start else { throw u.failAt("\(what): its bytes lie outside the pickle") }
            let (dataAt, d, key, n) = try parse(UnsafeRawBufferPointer(rebasing: u.bytes[start..<(start + count)]))
            dtype = d
            storage = StorageBytes(source: .mapped(offset: offset + dataAt, record: nil), count: n, key: key)
        case .owned(let data):
            let (dataAt, d, key, n) = try data.withUnsafeBytes { try parse($0) }
            dtype = d
            storage = StorageBytes(source: .owned(data.subdata(in: (data.startIndex + dataAt)..<(data.startIndex + dataAt + n))), count: n, key: key)
        }
        u.result.storages.append(storage)
        return .storage(u.result.storages.count - 1, dtype)
    }

    /// A strided view, checked to lie inside its storage.
    static func tensor(storage: Int, dtype: StoredDType, shape: [Int], strides: [Int], offset: Int, in u: inout Unpickler) throws -> PickleValue {
        let key = u.result.storages[storage].key
        guard shape.count == strides.count else { throw u.failAt("tensor of storage '\(key)': size \(shape) and stride \(strides) differ in rank") }
        guard shape.allSatisfy({ (0..<(1 << 40)).contains($0) }), strides.allSatisfy({ (0..<(1 << 48)).contains($0) }), (0..<(1 << 56)).contains(offset) else {
            throw u.failAt("tensor of storage '\(key)': size \(shape), stride \(strides) or offset \(offset) out of range")
        }
        let count = try Limits.elements(shape, what: "tensor of storage '\(key)'", source: u.path)
        if count > 0 {
            var last = offset
            for (d, s) in zip(shape, strides) {
                let (step, o1) = (d - 1).multipliedReportingOverflow(by: s)
                let (sum, o2) = last.addingReportingOverflow(step)
                guard !o1, !o2 else { throw u.failAt("tensor of storage '\(key)': its extent overflows") }
                last = sum
            }
            let (needed, o) = (last + 1).multipliedReportingOverflow(by: dtype.size)
            let available = u.result.storages[storage].count
            guard !o, needed <= available else {
                throw u.fail(
                    "a tensor of size \(shape), stride \(strides), offset \(offset) needs \(o ? "more than 2^63" : "\(needed)") bytes of storage '\(key)', which holds \(available): truncated or corrupt checkpoint"
                )
            }
        }
        u.result.tensors.append(StoredTensor(dtype: dtype, shape: shape, strides: strides, offset: offset, storage: storage, count: count))
        return .tensor(u.result.tensors.count - 1)
    }

    /// A numpy array over a bytes value (C or Fortran order).
    static func array(dtype: PickleValue, shape: [Int], fortran: Bool, data: PickleValue, in u: inout Unpickler) throws -> PickleValue {
        guard case .numpyDType(let di) = dtype else { throw u.failAt("numpy array with a \(dtype.kind) as its dtype") }
        let (code, order) = u.dtypes[di]
        let bare = code.first.map { "<>|=".contains($0) } == true ? String(code.dropFirst()) : code
        guard let d = StoredDType.numpy[bare] else {
            throw u.failAt("numpy dtype '\(code)' is not read (f8, f4, f2, i8, i4, i2, i1, u1 and b1 are; object arrays never)")
        }
        guard order != ">" || d.size == 1 else { throw u.failAt("big-endian numpy array ('>\(bare)'): convert it with .astype('<\(bare)') before pickling") }
        guard case .bytes(let blob) = data else { throw u.failAt("numpy array data is a \(data.kind), not bytes (object arrays are not read)") }
        guard shape.allSatisfy({ (0..<(1 << 40)).contains($0) }) else { throw u.failAt("numpy array shape \(shape) out of range") }
        let count = try Limits.elements(shape, what: "numpy array", source: u.path)
        let (needed, o) = count.multipliedReportingOverflow(by: d.size)
        guard !o, needed <= u.result.blobCounts[blob] else {
            throw u.failAt("a numpy array of shape \(shape) and dtype \(bare) needs \(needed) bytes, its data holds \(u.result.blobCounts[blob])")
        }
        var strides = [Int](repeating: 1, count: shape.count)
        if fortran {
            for i in shape.indices.dropFirst() { strides[i] = strides[i - 1] * max(shape[i - 1], 1) }
        } else {
            for i in shape.indices.reversed().dropFirst() { strides[i] = strides[i + 1] * max(shape[i + 1], 1) }
        }
        u.result.storages.append(StorageBytes(source: u.result.blobs[blob], count: u.result.blobCounts[blob], key: "array \(u.result.tensors.count)"))
        u.result.tensors.append(StoredTensor(dtype: d, shape: shape, strides: strides, offset: 0, storage: u.result.storages.count - 1, count: count))
        return .tensor(u.result.tensors.count - 1)
    }
}
