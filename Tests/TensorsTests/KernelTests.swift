import Foundation
import Tensors
import Testing

@Suite struct KernelTests {
    @Test func fastErfAndExpAgreeWithLibm() {
        var xs = (0..<20001).map { Float($0 - 10000) / 1250 } // −8 … 8
        var erfs = xs
        erfs.withUnsafeMutableBufferPointer { Kernels.fastErf($0.baseAddress!, count: $0.count) }
        let erfWorst = zip(xs, erfs).map { abs(erff($0) - $1) }.max()!
        #expect(erfWorst < 1e-6, "erf max abs error \(erfWorst)")
        xs = (0..<20001).map { Float($0 - 15000) / 200 } // −75 … 25
        var exps = xs
        exps.withUnsafeMutableBufferPointer { Kernels.fastExp($0.baseAddress!, count: $0.count) }
        let expWorst = zip(xs, exps).map { abs(expf($0) - $1) / expf($0) }.max()!
        #expect(expWorst < 1e-6, "exp max relative error \(expWorst)")
        var tiny: [Float] = [-100, -1000, -.infinity]
        tiny.withUnsafeMutableBufferPointer { Kernels.fastExp($0.baseAddress!, count: 3) }
        #expect(tiny == [0, 0, 0])
    }

    @Test func softmaxRowsSumToOneAndGELUMatchesTheFormula() {
        var x: [Float] = [1, 2, 3, -1000, 0, 1000]
        x.withUnsafeMutableBufferPointer { Kernels.softmaxRows($0.baseAddress!, rows: 2, width: 3) }
        #expect(abs(x[0...2].reduce(0, +) - 1) < 1e-6 && abs(x[5] - 1) < 1e-6 && x[3] == 0)
        var g: [Float] = [-3, -0.5, 0, 0.7, 2.5]
        let expected = g.map { 0.5 * $0 * (1 + erff($0 / Float(2).squareRoot())) }
        g.withUnsafeMutableBufferPointer { Kernels.geluExact($0.baseAddress!, count: $0.count) }
        #expect(zip(g, expected).allSatisfy { abs($0 - $1) < 1e-6 })
    }
}
