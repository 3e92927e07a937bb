import Foundation
import Imaging
import MenagerieKit
import Tensors

/// One image of the dataset: which split, species and sample, and its variation.
public struct Sample: Sendable, Equatable {
    public var split: Int
    public var species: Int
    /// The sample's number among its species' images in the split.
    public var number: Int
    public var variant: Variant
    public var pose: Pose
    public var textureSeed: UInt64
}

public let splitNames = ["train", "val", "test"]

/// The dataset: a world plus how many images each species has per split. Every image is a pure
/// function of (seed, split, species, number), so any slice is generated on demand.
public struct SyntheticTreeOfLife: Sendable {
    public let world: World
    public let size: Int
    public let perSpecies: [Int]

    public init(seed: UInt64, shape: TreeShape, size: Int, perSpecies: [Int]) {
        world = World(seed: seed, shape: shape)
        self.size = size
        self.perSpecies = perSpecies
    }

    public func count(split: Int) -> Int { perSpecies[split] * world.species.count }

    /// The n-th image of a split in canonical order (species-major).
    public func sample(split: Int, index n: Int) -> Sample {
        let species = n / perSpecies[split], number = n % perSpecies[split]
        var rng = SeededGenerator(seed: hash64(world.seed ^ hash64(UInt64(split) << 48 | UInt64(species) << 24 | UInt64(number))))
        let variant = Variant(sex: Int(rng.next() % 2), stage: rng.uniform() < 0.3 ? 0 : 1)
        let pose = Pose(dx: rng.uniform(-0.06, 0.06), dy: rng.uniform(-0.05, 0.05), scale: rng.uniform(0.9, 1.1), flipped: rng.next() % 2 == 1)
        return Sample(split: split, species: species, number: number, variant: variant, pose: pose, textureSeed: rng.next())
    }

    public func render(_ s: Sample) -> Rendering {
        renderOrganism(world.species[s.species], variant: s.variant, pose: s.pose, size: size, textureSeed: s.textureSeed)
    }

    /// The order of a split's images in an epoch: canonical, or a Fisher–Yates shuffle seeded by
    /// (seed, split, epoch). Only indices are permuted; images are drawn when asked for.
    public func order(split: Int, shuffle: Bool, epoch: Int) -> [Int] {
        var idx = Array(0..<count(split: split))
        guard shuffle else { return idx }
        var rng = SeededGenerator(seed: hash64(world.seed ^ 0x5F1E ^ UInt64(split) << 40 ^ UInt64(bitPattern: Int64(epoch))))
        for i in stride(from: idx.count - 1, to: 0, by: -1) {
            idx.swapAt(i, Int(rng.next() % UInt64(i + 1)))
        }
        return idx
    }
}
