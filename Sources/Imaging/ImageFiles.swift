import Formats
import Foundation

/// Image files given as a path: one PNG/TIFF/JPEG file, or a folder of them (sorted by name).
public enum ImageFiles {
    public static let extensions = ["png", "tif", "tiff", "jpg", "jpeg"]

    /// The image files at `path` (a file, or a folder's PNG/TIFF/JPEG files sorted by name; a
    /// folder of links the host made lists the files as the user named them).
    public static func list(_ path: String, option: String = "images") throws -> [String] {
        try FolderFiles.list(path, extensions: extensions, option: option, what: "PNG, TIFF or JPEG")
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
