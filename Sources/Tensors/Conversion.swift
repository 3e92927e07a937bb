import CDNNL

extension Tensor {
    /// The same values in another dtype. Float widening is exact (f16, bf16 → f32/f64); narrowing
    /// rounds to nearest; float → integer truncates toward zero. Cost: O(n), or free when the dtype
    /// is already `target`.
    public func converted(to target: DType) throws -> Tensor {
        if target == dtype { return self }
        let n = count
        let p = storage.bytes
        // Rounding fp32 weights for bf16 inference, without an intermediate buffer.
        if target == .bfloat16 && dtype == .float32 {
            var out = Tensor(zeros: .bfloat16, shape: shape)
            out.withUnsafeMutableBytes { raw in
                mng_round_bf16(p.assumingMemoryBound(to: Float.self), raw.baseAddress!.assumingMemoryBound(to: UInt16.self), n)
            }
            return out
        }
        // The common checkpoint case, without an intermediate buffer.
        if target == .float32 && (dtype == .float16 || dtype == .bfloat16) {
            var out = Tensor(zeros: .float32, shape: shape)
            let half = dtype == .float16
            out.withUnsafeMutableBytes { raw in
                let dst = raw.baseAddress!.assumingMemoryBound(to: Float.self)
                for i in 0..<n {
                    let bits = p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)
                    #if arch(x86_64) || arch(arm64)
                        dst[i] = half ? Float(Float16(bitPattern: bits)) : Float(bitPattern: UInt32(bits) << 16)
                    #else
                        dst[i] = Float(bitPattern: UInt32(bits) << 16)
                    #endif
                }
            }
            return out
        }
        var values = [Double](repeating: 0, count: n)
        switch dtype {
        case .float16:
            #if arch(x86_64) || arch(arm64)
                for i in 0..<n { values[i] = Double(Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
            #else
                throw TensorError("f16 is not supported on this architecture")
            #endif
        case .bfloat16:
            for i in 0..<n { values[i] = Double(Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)) }
        default:
            values = try doubles()
        }
        var out = Tensor(zeros: target, shape: shape)
        out.withUnsafeMutableBytes { raw in
            switch target {
            case .float32: for i in 0..<n { raw.storeBytes(of: Float(values[i]), toByteOffset: 4 * i, as: Float.self) }
            case .float64: for i in 0..<n { raw.storeBytes(of: values[i], toByteOffset: 8 * i, as: Double.self) }
            case .int32: for i in 0..<n { raw.storeBytes(of: Int32(clamping: Int64(values[i])), toByteOffset: 4 * i, as: Int32.self) }
            case .int64: for i in 0..<n { raw.storeBytes(of: Int64(values[i]), toByteOffset: 8 * i, as: Int64.self) }
            case .uint8: for i in 0..<n { raw.storeBytes(of: UInt8(clamping: Int64(values[i])), toByteOffset: i, as: UInt8.self) }
            case .bool: for i in 0..<n { raw.storeBytes(of: UInt8(values[i] != 0 ? 1 : 0), toByteOffset: i, as: UInt8.self) }
            case .float16:
                #if arch(x86_64) || arch(arm64)
                    for i in 0..<n { raw.storeBytes(of: Float16(Float(values[i])).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
                #endif
            case .bfloat16:
                // Round to nearest even on the upper 16 bits.
                for i in 0..<n {
                    let bits = Float(values[i]).bitPattern
                    let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
                    raw.storeBytes(of: UInt16(truncatingIfNeeded: rounded >> 16), toByteOffset: 2 * i, as: UInt16.self)
                }
            }
        }
        return out
    }
}
