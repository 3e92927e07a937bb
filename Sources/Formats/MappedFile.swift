import Foundation

/// A read-only memory map of a whole file, unmapped when the last reference goes.
/// Tensors read from it borrow its pages (and keep it alive): a checkpoint is never copied whole.
// @unchecked: immutable after init; the mapping is PROT_READ (never written) and unmapped only in deinit.
public final class MappedFile: @unchecked Sendable {
    public let path: String
    public let bytes: UnsafeRawPointer
    public let count: Int

    public init(path: String) throws {
        let (fd, size) = try RegularFile.open(path)
        defer { close(fd) }
        self.path = path
        self.count = size
        if count == 0 {
            bytes = UnsafeRawPointer(UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 64))
            return
        }
        guard let p = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw FormatError(path: path, "cannot memory-map \(count) bytes: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawPointer(p)
    }

    deinit {
        if count == 0 { UnsafeMutableRawPointer(mutating: bytes).deallocate() } else { munmap(UnsafeMutableRawPointer(mutating: bytes), count) }
    }
}
