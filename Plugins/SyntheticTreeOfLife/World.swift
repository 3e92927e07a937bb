import Foundation
import Tensors

/// The seven Linnaean ranks, in order.
public let ranks = ["kingdom", "phylum", "class", "order", "family", "genus", "species"]

/// The parts an organism is drawn from; the raw values are the mask labels.
public enum Part: Int, CaseIterable, Sendable {
    case background = 0, head, body, limbs, tail, appendage
    /// The name used in masks, CSVs and sibling-pair records.
    public var name: String {
        switch self {
        case .background: "background"
        case .head: "head"
        case .body: "body"
        case .limbs: "wings_fins"
        case .tail: "tail"
        case .appendage: "appendage"
        }
    }
}

/// The shape of the tree: how many children each rank has (one kingdom).
public struct TreeShape: Sendable, Equatable {
    public var phyla = 2, classesPerPhylum = 1, ordersPerClass = 2, familiesPerOrder = 2, generaPerFamily = 2, speciesPerGenus = 4
    public var speciesCount: Int { phyla * classesPerPhylum * ordersPerClass * familiesPerOrder * generaPerFamily * speciesPerGenus }
    public init(
        phyla: Int = 2, classesPerPhylum: Int = 1, ordersPerClass: Int = 2, familiesPerOrder: Int = 2, generaPerFamily: Int = 2,
        speciesPerGenus: Int = 4
    ) {
        (self.phyla, self.classesPerPhylum, self.ordersPerClass) = (phyla, classesPerPhylum, ordersPerClass)
        (self.familiesPerOrder, self.generaPerFamily, self.speciesPerGenus) = (familiesPerOrder, generaPerFamily, speciesPerGenus)
    }
}

/// How one species looks: everything but the distinguishing part is its genus's.
public struct Appearance: Sendable, Equatable {
    /// Phylum-level body plan: wings (bird-like) or fins (fish-like).
    public var winged: Bool
    /// Body length / height.
    public var elongation: Double
    /// Body radius in units of the image side (before the life-stage scale).
    public var bodySize: Double
    public var headSize: Double
    public var beakLength: Double
    public var limbSize: Double
    public var tailLength: Double
    /// Hue of the body (0…1) and of the pattern.
    public var hue: Double
    public var patternHue: Double
    /// 0 plain, 1 stripes, 2 spots.
    public var pattern: Int
    /// Habitat on 0…1 (open water → reef → forest → sand): the background's colour and texture.
    public var habitat: Double
}

/// One species: its lineage (an index per rank), names, traits and appearance.
public struct Species: Sendable {
    public var index: Int
    /// Node names from kingdom to species (the species entry is the binomial).
    public var lineage: [String]
    /// Node index per rank (kingdom … species), unique within the rank.
    public var nodes: [Int]
    public var commonName: String
    public var appearance: Appearance
    /// Index among its genus's species.
    public var siblingIndex: Int
    /// The part in which this genus's species differ from one another.
    public var distinguishingPart: Part
    public var binomial: String { lineage[6] }
}

/// A pair of sibling species and the one part in which they differ.
public struct SiblingPair: Sendable, Equatable {
    public var a: Int, b: Int
    public var part: Part
}

/// The whole synthetic tree of life, derived from a seed and a tree shape alone.
public struct World: Sendable {
    public let seed: UInt64
    public let shape: TreeShape
    public let species: [Species]
    /// Names per rank, indexed by node.
    public let nodeNames: [[String]]

    public init(seed: UInt64, shape: TreeShape) {
        self.seed = seed
        self.shape = shape
        var rng = SeededGenerator(seed: seed ^ 0x7EE0_F11F_E000_0001)
        var names = NameMaker()
        var nodeNames: [[String]] = Array(repeating: [], count: 7)
        nodeNames[0] = ["Animalia"]
        var species: [Species] = []
        var usedCommon = Set<String>()
        // Traits drift down the tree: each node adds a small offset to its parent's value, so
        // related species have related traits (a phylogenetic signal).
        for p in 0..<shape.phyla {
            let phylum = names.taxon(suffix: "ozoa", &rng)
            nodeNames[1].append(phylum)
            let winged = p % 2 == 0
            let phylumHue = rng.uniform()
            for _ in 0..<shape.classesPerPhylum {
                let className = names.taxon(suffix: "ia", &rng)
                nodeNames[2].append(className)
                let classHabitat = rng.uniform(0.15, 0.85)
                for _ in 0..<shape.ordersPerClass {
                    let order = names.taxon(suffix: "iformes", &rng)
                    nodeNames[3].append(order)
                    let orderElongation = winged ? rng.uniform(1.05, 1.45) : rng.uniform(1.5, 2.2)
                    for _ in 0..<shape.familiesPerOrder {
                        let family = names.taxon(suffix: "idae", &rng)
                        nodeNames[4].append(family)
                        let familyHue = (phylumHue + rng.uniform(-0.18, 0.18) + 1).truncatingRemainder(dividingBy: 1)
                        let familySize = rng.uniform(0.2, 0.26)
                        for _ in 0..<shape.generaPerFamily {
                            let genus = names.genus(&rng)
                            nodeNames[5].append(genus)
                            let genusIndex = nodeNames[5].count - 1
                            var base = Appearance(
                                winged: winged, elongation: orderElongation + rng.uniform(-0.15, 0.15),
                                bodySize: familySize + rng.uniform(-0.02, 0.02), headSize: rng.uniform(0.45, 0.6),
                                beakLength: rng.uniform(0.3, 0.6), limbSize: rng.uniform(0.45, 0.65), tailLength: rng.uniform(0.4, 0.65),
                                hue: (familyHue + rng.uniform(-0.06, 0.06) + 1).truncatingRemainder(dividingBy: 1),
                                patternHue: rng.uniform(), pattern: Int(rng.next() % 3),
                                habitat: min(1, max(0, classHabitat + rng.uniform(-0.35, 0.35))))
                            let part = [Part.appendage, .tail, .limbs, .head][genusIndex % 4]
                            let colour = names.colour(base.hue)
                            for k in 0..<shape.speciesPerGenus {
                                // The ONE part that differs between siblings, spread over its range.
                                let t = shape.speciesPerGenus == 1 ? 0.5 : Double(k) / Double(shape.speciesPerGenus - 1)
                                switch part {
                                case .appendage: base.beakLength = 0.15 + 0.85 * t
                                case .tail: base.tailLength = 0.2 + 0.8 * t
                                case .limbs: base.limbSize = 0.3 + 0.6 * t
                                default: base.headSize = 0.38 + 0.4 * t
                                }
                                let epithet = names.epithet(&rng)
                                let binomial = genus + " " + epithet
                                nodeNames[6].append(binomial)
                                var common =
                                    "\(NameMaker.tier(part, t, winged: winged)) \(colour) \(winged ? names.birdNoun(genusIndex) : names.fishNoun(genusIndex))"
                                if usedCommon.contains(common) { common += " of \(genus)" }
                                usedCommon.insert(common)
                                species.append(
                                    Species(
                                        index: species.count,
                                        lineage: ["Animalia", phylum, className, order, family, genus, binomial],
                                        nodes: [
                                            0, nodeNames[1].count - 1, nodeNames[2].count - 1, nodeNames[3].count - 1,
                                            nodeNames[4].count - 1, genusIndex, species.count,
                                        ],
                                        commonName: common, appearance: base, siblingIndex: k, distinguishingPart: part))
                            }
                        }
                    }
                }
            }
        }
        self.species = species
        self.nodeNames = nodeNames
    }

    /// Every pair of species in the same genus, with the part that tells them apart.
    public var siblingPairs: [SiblingPair] {
        var out: [SiblingPair] = []
        for a in species {
            for b in species where b.index > a.index && b.nodes[5] == a.nodes[5] {
                out.append(SiblingPair(a: a.index, b: b.index, part: a.distinguishingPart))
            }
        }
        return out
    }

    /// The ecological traits exported per species (each drives what is drawn).
    public static let traitNames = ["beak_length", "tail_length", "limb_size", "head_size", "body_size", "habitat"]

    public func traits(_ s: Species) -> [Double] {
        let a = s.appearance
        return [a.beakLength, a.tailLength, a.limbSize, a.headSize, a.bodySize, a.habitat]
    }
}

/// Latin-looking names from syllables, unique within the world.
struct NameMaker {
    var used = Set<String>()
    static let onsets = ["c", "v", "th", "m", "r", "l", "ph", "s", "n", "t", "p", "br", "cr", "gl", "st", "x", "d", "z"]
    static let vowels = ["a", "e", "i", "o", "u", "ae", "y"]
    static let codas = ["", "n", "r", "s", "x", "l", "nth", "rc"]

    mutating func stem(_ syllables: Int, _ rng: inout SeededGenerator) -> String {
        while true {
            var s = ""
            for _ in 0..<syllables {
                s += Self.onsets[Int(rng.next() % UInt64(Self.onsets.count))] + Self.vowels[Int(rng.next() % UInt64(Self.vowels.count))]
            }
            s += Self.codas[Int(rng.next() % UInt64(Self.codas.count))]
            if used.insert(s).inserted { return s }
        }
    }

    mutating func taxon(suffix: String, _ rng: inout SeededGenerator) -> String {
        let s = stem(2, &rng)
        return s.prefix(1).uppercased() + s.dropFirst() + suffix
    }

    mutating func genus(_ rng: inout SeededGenerator) -> String {
        let s = stem(2, &rng) + ["us", "a", "ops", "is", "ornis", "ichthys"][Int(rng.next() % 6)]
        return s.prefix(1).uppercased() + s.dropFirst()
    }

    mutating func epithet(_ rng: inout SeededGenerator) -> String {
        stem(2, &rng) + ["ensis", "ata", "icus", "oides", "ina", "ulus"][Int(rng.next() % 6)]
    }

    func colour(_ hue: Double) -> String {
        let names = ["Crimson", "Amber", "Golden", "Olive", "Jade", "Teal", "Azure", "Indigo", "Violet", "Rose"]
        return names[min(names.count - 1, Int(hue * Double(names.count)))]
    }

    func birdNoun(_ genus: Int) -> String { ["Finch", "Warbler", "Shrike", "Tanager", "Plover", "Kestrel", "Wren", "Heron"][genus % 8] }
    func fishNoun(_ genus: Int) -> String { ["Darter", "Wrasse", "Goby", "Minnow", "Snapper", "Tetra", "Grunt", "Perch"][genus % 8] }

    /// A word for where t (0…1) lies on the distinguishing part's range.
    static func tier(_ part: Part, _ t: Double, winged: Bool) -> String {
        let level = min(3, Int(t * 4))
        switch part {
        case .appendage: return ["Stub-billed", "Short-billed", "Long-billed", "Sickle-billed"][level]
        case .tail: return ["Bob-tailed", "Short-tailed", "Long-tailed", "Streamer-tailed"][level]
        case .limbs:
            return
                (winged ? ["Small-winged", "Trim-winged", "Broad-winged", "Great-winged"] : ["Small-finned", "Trim-finned", "Broad-finned", "Sail-finned"])[
                    level]
        default: return ["Pinheaded", "Small-headed", "Large-headed", "Bigheaded"][level]
        }
    }
}

extension SeededGenerator {
    /// Uniform on [lo, hi).
    mutating func uniform(_ lo: Double = 0, _ hi: Double = 1) -> Double {
        lo + (hi - lo) * Double(next() >> 11) / Double(1 << 53)
    }
}
