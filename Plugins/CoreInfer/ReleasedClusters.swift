import Formats
import Foundation
import Tensors

/// The cluster directory wangqinsi1/CoreInfer's cluster.py writes and convert_*_sim.py reads:
///   DIR/neuron_activation/<layer>/cluster_<c>.pkl — one pickled torch tensor (int64, a view of the
///     ranked ids: `pickle.dump(sorted_indices_clu[:remained_num])`), or a numpy integer array;
///   DIR/cluster_activation/kmeans.pkl — a pickled scikit-learn KMeans, of which only the state
///     dict's `cluster_centers_` numpy array is read (the class is never constructed), or any file
///     given as `kmeans=` (such a pickle, a pickled bare array, or a .npy of centroids [k, width]).
/// mlb_model.pkl and cluster.pkl are not read: the binarizer's classes are range(0, width) with width
/// the centroids' (d_ff, or d_ff − 1 for the release's OPT files, whose binarizer omits the last neuron).
/// Everything goes through Menagerie's restricted unpickler; every number is checked.
enum ReleasedClusters {
    static let kmeansClasses: Set<String> = ["sklearn.cluster._kmeans.KMeans", "sklearn.cluster.k_means_.KMeans"]

    static func load(directory: String, kmeans: String, dff: Int, layers: Range<Int>) throws -> Clusters {
        let centroidsPath = kmeans.isEmpty ? directory + "/cluster_activation/kmeans.pkl" : (kmeans as NSString).expandingTildeInPath
        let centroids = try loadCentroids(centroidsPath, dff: dff)
        let root = directory + "/neuron_activation"
        let entries: [String]
        do { entries = try FileManager.default.contentsOfDirectory(atPath: root) } catch {
            throw FormatError(
                path: root, "cannot be listed (\(error.localizedDescription)): a released cluster directory holds neuron_activation/<layer>/cluster_<c>.pkl")
        }
        var layerDirs: [Int: String] = [:]
        for name in entries where !name.hasPrefix(".") {
            guard let l = Int(name), l >= 0, String(l) == name else {
                throw FormatError(path: root + "/" + name, "is not a layer directory (neuron_activation holds one directory per layer, named 0, 1, …)")
            }
            layerDirs[l] = root + "/" + name
        }
        var neurons = [[Int: [Int]]](repeating: [:], count: centroids.rows.count)
        for l in layers {
            guard let dir = layerDirs[l] else {
                throw FormatError(
                    path: root,
                    "has no directory for converted layer \(l) (layers present: \(layerDirs.keys.sorted().map(String.init).joined(separator: ", ")))")
            }
            let files: [String]
            do { files = try FileManager.default.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") } } catch {
                throw FormatError(path: dir, "cannot be listed (\(error.localizedDescription))")
            }
            var found = Set<Int>()
            for f in files {
                guard f.hasPrefix("cluster_"), f.hasSuffix(".pkl"), let c = Int(f.dropFirst(8).dropLast(4)), c >= 0, "cluster_\(c).pkl" == f else {
                    throw FormatError(path: dir + "/" + f, "is not named cluster_<c>.pkl")
                }
                guard c < centroids.rows.count else {
                    throw FormatError(path: dir + "/" + f, "is a list for cluster \(c), but \(centroids.path) has \(centroids.rows.count) centroids")
                }
                found.insert(c)
            }
            if let missing = (0..<centroids.rows.count).first(where: { !found.contains($0) }) {
                throw FormatError(path: dir, "has no cluster_\(missing).pkl (\(centroids.path) has \(centroids.rows.count) centroids)")
            }
            for c in 0..<centroids.rows.count { neurons[c][l] = try loadNeurons(dir + "/cluster_\(c).pkl", dff: dff) }
        }
        return Clusters(centroids: centroids.rows, width: centroids.width, neurons: neurons, layer: nil, signatureSize: nil, signatureAlpha: nil)
    }

    /// The centroids [k, width], width = d_ff or d_ff − 1, all finite.
    static func loadCentroids(_ path: String, dff: Int) throws -> (rows: [[Double]], width: Int, path: String) {
        let tensor: Tensor
        if path.lowercased().hasSuffix(".npy") {
            tensor = try NPY.read(path: path)
        } else {
            let file: TorchFile
            do { file = try TorchFile(path: path, objectClasses: kmeansClasses) } catch let e as FormatError {
                throw FormatError(
                    path: path,
                    "\(e.problem) — a KMeans pickle (its cluster_centers_ is read), a pickled numpy array or a .npy of centroids [k, d_ff] is needed")
            }
            guard let name = ["cluster_centers_", "tensor"].first(where: { file.tensors[$0] != nil }) else {
                throw FormatError(path: path, "holds no cluster_centers_ array (arrays: \(file.names.prefix(8).joined(separator: ", ")))")
            }
            tensor = try file.tensor(name)
        }
        guard tensor.shape.count == 2, tensor.shape[0] >= 1 else {
            throw FormatError(path: path, "centroids have shape \(tensor.shape); [k, d_ff] with k ≥ 1 is needed")
        }
        let (k, width) = (tensor.shape[0], tensor.shape[1])
        guard width == dff || width == dff - 1 else {
            throw FormatError(
                path: path,
                "centroids are \(width) wide; this model's d_ff is \(dff) (d_ff − 1 is also read: the release's OPT binarizer omits the last neuron)")
        }
        guard [.float64, .float32, .float16, .bfloat16].contains(tensor.dtype) else {
            throw FormatError(path: path, "centroids hold \(tensor.dtype.name); floating-point values are needed")
        }
        let values = try tensor.doubles()
        guard values.allSatisfy(\.isFinite) else { throw FormatError(path: path, "a centroid holds a non-finite value") }
        return ((0..<k).map { Array(values[($0 * width)..<(($0 + 1) * width)]) }, width, path)
    }

    /// One cluster's neuron ids at one layer: a rank-1 integer tensor or array, ids in 0..<d_ff, none twice.
    static func loadNeurons(_ path: String, dff: Int) throws -> [Int] {
        let file = try TorchFile(path: path)
        guard file.names == ["tensor"] else {
            throw FormatError(
                path: path,
                "holds \(file.names.isEmpty ? "no tensor" : "\(file.names.count) tensors (\(file.names.prefix(4).joined(separator: ", ")))"); one pickled tensor or numpy array of neuron ids is read"
            )
        }
        let t = try file.tensor("tensor")
        guard t.shape.count == 1 else { throw FormatError(path: path, "the neuron ids have shape \(t.shape); a 1-D list is needed") }
        let ids: [Int]
        switch t.dtype {
        case .int64: ids = try t.scalars(as: Int64.self).map { $0 < Int64(Int.max) ? Int($0) : Int.max }
        case .int32: ids = try t.scalars(as: Int32.self).map(Int.init)
        case .uint8: ids = try t.scalars(as: UInt8.self).map(Int.init)
        default: throw FormatError(path: path, "the neuron ids are \(t.dtype.name); integers are needed")
        }
        return try checkedNeurons(ids, dff: dff, what: "the list", path: path)
    }
}
