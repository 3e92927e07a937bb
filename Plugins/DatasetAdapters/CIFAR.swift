import Formats
import Foundation

/// CIFAR-10 in its binary version (Krizhevsky 2009): `data_batch_1.bin` … `data_batch_5.bin` and
/// `test_batch.bin`, each a run of 3073-byte records (a label byte, then 1024 red, 1024 green and
/// 1024 blue bytes, rows top to bottom), and `batches.meta.txt` with the class names. The last
/// `valCount` training records form the validation split.
public struct CIFAR10Source: ItemSource {
    public let classNames: [String]
    public let channels = 3
    public let size = 32
    public let rankLabels: [[Int]]? = nil
    let train: [MappedFile], test: MappedFile
    let trainCount: Int, valCount: Int
    /// Files left out with skip_bad.
    public let skipped: [Skipped]
    static let record = 3073

    public init(root: String, valCount: Int, skipBad: Bool) throws {
        var skipped: [Skipped] = []
        func open(_ name: String) throws -> MappedFile? {
            let path = root + "/" + name
            guard FileManager.default.fileExists(atPath: path) else {
                throw FormatError(path: path, "not found (a CIFAR-10 binary folder holds data_batch_1.bin … data_batch_5.bin and test_batch.bin)")
            }
            let f = try MappedFile(path: path)
            guard f.count > 0 && f.count % Self.record == 0 else {
                let e = FormatError(path: path, "truncated or not CIFAR-10 binary: \(f.count) bytes is not a whole number of \(Self.record)-byte records")
                if skipBad {
                    skipped.append(Skipped(file: path, reason: "\(e)"))
                    return nil
                }
                throw e
            }
            return f
        }
        train = try (1...5).compactMap { try open("data_batch_\($0).bin") }
        guard let test = try open("test_batch.bin") else { throw FormatError(path: root + "/test_batch.bin", "unreadable, and the test split needs it") }
        self.test = test
        trainCount = train.reduce(0) { $0 + $1.count / Self.record }
        guard valCount >= 0 && valCount < max(trainCount, 1) else {
            throw FormatError(path: root, "valCount \(valCount) must be below the \(trainCount) training records")
        }
        self.valCount = valCount
        let meta =
            (try? RegularFile.text(root + "/batches.meta.txt", limit: 1 << 20))?
            .split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } ?? []
        classNames = meta.count == 10 ? meta : ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        self.skipped = skipped
    }

    public func count(split: Int) -> Int { [trainCount - valCount, valCount, test.count / Self.record][split] }

    public func item(split: Int, index: Int) throws -> (pixels: [Float], label: Int) {
        var file = test, i = index
        if split != 2 {
            i = split == 0 ? index : trainCount - valCount + index
            for f in train {
                let n = f.count / Self.record
                if i < n {
                    file = f
                    break
                }
                i -= n
            }
        }
        let base = file.bytes + i * Self.record
        let label = Int(base.load(as: UInt8.self))
        guard label < 10 else { throw FormatError(path: file.path, "record \(i) has label \(label); CIFAR-10 labels are 0…9") }
        return ((1..<Self.record).map { Float(base.load(fromByteOffset: $0, as: UInt8.self)) / 255 }, label)
    }
}
