import Formats
import Foundation

/// Image files given as a path: one PNG/TIFF/JPEG file, or a folder of them (sorted by name).
public enum ImageFiles {
    public static let extensions = ["png", "tif", "tiff", "jpg", "jpeg"]

    /// The image files at `path` (a file, or a folder's PNG/TIFF/JPEG files sorted by name).
    public static func list(_ path: String, option: String = "images") throws -> [String] {
        let path = (path as NSString).expandingTildeInPath
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { throw FormatError(path: path, "does not exist (\(option))") }
        guard isDir.boolValue else { return [path] }
        let files = try FileManager.default.contentsOfDirectory(atPath: path)
            .filter { extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted().map { path + "/" + $0 }
        guard !files.isEmpty else { throw FormatError(path: path, "holds no PNG, TIFF or JPEG file (\(option))") }
        // A folder the host made of links for several `--input` files: the files as the user named them.
        if (path as NSString).lastPathComponent.hasPrefix("menagerie-run-inputs-") {
            return files.map { (try? FileManager.default.destinationOfSymbolicLink(atPath: $0)) ?? $0 }
        }
        return files
    }

    /// A PNG, TIFF or JPEG file as an 8-bit image.
    public static func read(_ path: String) throws -> Image {
        switch (path as NSString).pathExtension.lowercased() {
        case "png": return try PNG.read(path: path)
        case "tif", "tiff": return try Image(tensor: TIFF.read(path: path).pixels)
        case "jpg", "jpeg": return try JPEG.read(path: path)
        default: throw FormatError(path: path, "is not a PNG, TIFF or JPEG file (by its extension)")
        }
    }
}
