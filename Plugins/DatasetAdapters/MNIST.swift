import Formats
import Foundation

/// MNIST in its original IDX files (LeCun et al.): `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte` (the `.idx3-ubyte` spelling is accepted too;
/// gzip-compressed files must be unpacked first). IDX: a big-endian magic (0x0803 for u8 images of
/// rank 3, 0x0801 for u8 labels of rank 1), the dimensions as big-endian u32, then the data.
/// The last `valCount` training images form the validation split.
public struct MNISTSource: ItemSource {
    public let classNames = (0...9).map(String.init)
    public let channels = 1
    public let size: Int
    public let rankLabels: [[Int]]? = nil
    let trainImages: IDX, trainLabels: IDX, testImages: IDX, testLabels: IDX
    let valCount: Int

    public init(root: String, valCount: Int) throws {
        func find(_ names: [String]) throws -> String {
            for n in names where FileManager.default.fileExists(atPath: root + "/" + n) { return root + "/" + n }
            if names.contains(where: { FileManager.default.fileExists(atPath: root + "/" + $0 + ".gz") }) {
                throw FormatError(path: root + "/" + names[0] + ".gz", "is gzip-compressed: unpack it first (gunzip -k)")
            }
            throw FormatError(path: root + "/" + names[0], "not found (an MNIST folder holds the four IDX files)")
        }
        trainImages = try IDX(path: try find(["train-images-idx3-ubyte", "train-images.idx3-ubyte"]), rank: 3)
        trainLabels = try IDX(path: try find(["train-labels-idx1-ubyte", "train-labels.idx1-ubyte"]), rank: 1)
        testImages = try IDX(path: try find(["t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"]), rank: 3)
        testLabels = try IDX(path: try find(["t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"]), rank: 1)
        for (images, labels) in [(trainImages, trainLabels), (testImages, testLabels)] {
            guard images.dims[0] == labels.dims[0] else {
                throw FormatError(path: labels.file.path, "holds \(labels.dims[0]) labels but \(images.file.path) holds \(images.dims[0]) images")
            }
            guard images.dims[1] > 0 else { throw FormatError(path: images.file.path, "images are \(images.dims[1])×\(images.dims[2]) pixels: empty") }
            guard images.dims[1] == images.dims[2] else {
                throw FormatError(path: images.file.path, "images are \(images.dims[1])×\(images.dims[2]); square images expected")
            }
        }
        guard trainImages.dims[1] == testImages.dims[1] else {
            throw FormatError(path: testImages.file.path, "images are \(testImages.dims[1]) px but the training images are \(trainImages.dims[1]) px")
        }
        guard (0..<trainImages.dims[0]).contains(valCount) || valCount == 0 else {
            throw FormatError(path: root, "valCount \(valCount) must be below the \(trainImages.dims[0]) training images")
        }
        size = trainImages.dims[1]
        self.valCount = valCount
    }

    public func count(split: Int) -> Int {
        [trainImages.dims[0] - valCount, valCount, testImages.dims[0]][split]
    }

    public func item(split: Int, index: Int) throws -> (pixels: [Float], label: Int) {
        let (images, labels, i) =
            split == 2 ? (testImages, testLabels, index) : (trainImages, trainLabels, split == 0 ? index : trainImages.dims[0] - valCount + index)
        let plane = size * size
        let base = images.data + i * plane
        let label = Int(labels.data.load(fromByteOffset: i, as: UInt8.self))
        guard label < 10 else { throw FormatError(path: labels.file.path, "label \(label) of item \(i) is not a digit") }
        return ((0..<plane).map { Float(base.load(fromByteOffset: $0, as: UInt8.self)) / 255 }, label)
    }
}

/// An IDX file of unsigned bytes, memory-mapped and validated (magic, rank, size).
// @unchecked: immutable; `data` points into the read-only memory map that `file` keeps alive.
struct IDX: @unchecked Sendable {
    let file: MappedFile
    let dims: [Int]
    let data: UnsafeRawPointer

    init(path: String, rank: Int) throws {
        file = try MappedFile(path: path)
        let b = file.bytes
        func u32(_ at: Int) -> Int {
            (0..<4).reduce(0) { $0 << 8 | Int(b.load(fromByteOffset: at + $1, as: UInt8.self)) }
        }
        guard file.count >= 4 + 4 * rank else { throw FormatError(path: path, "truncated: \(file.count) bytes cannot hold an IDX header of rank \(rank)") }
        let magic = u32(0)
        guard magic == 0x0800 | rank else {
            throw FormatError(
                path: path, String(format: "not an IDX file of unsigned bytes and rank %d (magic 0x%08x, expected 0x%08x)", rank, magic, 0x0800 | rank))
        }
        dims = (0..<rank).map { u32(4 + 4 * $0) }
        // Each dimension is < 2^32, so their product can overflow: checked, then compared with the
        // file's size before anything is read or allocated.
        let header = 4 + 4 * rank
        let elements: Int
        do { elements = try Limits.product(dims, what: "the IDX header's dimensions", source: path) } catch {
            throw FormatError(path: path, "the header's dimensions \(dims) describe more bytes than can be addressed; the file has \(file.count)")
        }
        let (need, overflow) = header.addingReportingOverflow(elements)
        guard !overflow, file.count == need else {
            if overflow || file.count < need {
                throw FormatError(
                    path: path, "truncated: the header's dimensions \(dims) need \(overflow ? "more than 2^63" : "\(need)") bytes, the file has \(file.count)")
            }
            throw FormatError(path: path, "has trailing bytes: the header \(dims) needs \(need) bytes, the file has \(file.count)")
        }
        data = b + 4 + 4 * rank
    }
}
