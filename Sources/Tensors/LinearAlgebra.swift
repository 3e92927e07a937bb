import COpenBLAS

/// Dense linear algebra beyond products, through the LAPACK bundled with OpenBLAS.
public enum LinearAlgebra {
    /// Eigenvalues (descending) and unit eigenvectors (`vectors[i]` for `values[i]`) of a symmetric
    /// n × n matrix given row-major (LAPACK `dsyevd`).
    public static func symmetricEigen(_ a: [Double], n: Int) throws -> (values: [Double], vectors: [[Double]]) {
        precondition(a.count == n * n, "symmetricEigen: \(a.count) values for \(n)×\(n)")
        guard n > 0 else { return ([], []) }
        var m = a, w = [Double](repeating: 0, count: n)
        var nn = Int32(n), lda = Int32(n), info: Int32 = 0
        var jobz = Int8(UInt8(ascii: "V")), uplo = Int8(UInt8(ascii: "U"))
        // Workspace query, then the decomposition.
        var lwork: Int32 = -1, liwork: Int32 = -1, wq = 0.0, iwq: Int32 = 0
        dsyevd_(&jobz, &uplo, &nn, &m, &lda, &w, &wq, &lwork, &iwq, &liwork, &info, 1, 1)
        guard info == 0 else { throw TensorError("dsyevd workspace query failed (info \(info))") }
        lwork = Int32(wq)
        liwork = iwq
        var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_(&jobz, &uplo, &nn, &m, &lda, &w, &work, &lwork, &iwork, &liwork, &info, 1, 1)
        guard info == 0 else { throw TensorError("dsyevd did not converge (info \(info))") }
        // Column j of the column-major result is eigenvector j; LAPACK orders values ascending.
        let order = (0..<n).reversed()
        return (order.map { w[$0] }, order.map { j in (0..<n).map { m[j * n + $0] } })
    }
}
