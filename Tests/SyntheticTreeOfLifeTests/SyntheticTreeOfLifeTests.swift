import Formats
import Foundation
import Imaging
import SyntheticTreeOfLife
import TestSupport
import Testing

/// The generator's promises: determinism, a well-formed taxonomy, masks that match the pixels,
/// siblings that differ in their one recorded part, traits that drive what is drawn.
@Suite struct SyntheticTreeOfLifeTests {
    let data = SyntheticTreeOfLife(seed: 3, shape: TreeShape(), size: 64, perSpecies: [6, 2, 2])

    @Test func sameSeedSameBytesOtherSeedOtherBytes() {
        let again = SyntheticTreeOfLife(seed: 3, shape: TreeShape(), size: 64, perSpecies: [6, 2, 2])
        let other = SyntheticTreeOfLife(seed: 4, shape: TreeShape(), size: 64, perSpecies: [6, 2, 2])
        for index in [0, 17, 101] {
            let a = data.render(data.sample(split: 0, index: index)), b = again.render(again.sample(split: 0, index: index))
            #expect(a == b)
            #expect(a != other.render(other.sample(split: 0, index: index)))
        }
        #expect(data.world.species.map { (s: Species) in s.binomial } == again.world.species.map { (s: Species) in s.binomial })
        #expect(data.world.species.map { (s: Species) in s.binomial } != other.world.species.map { (s: Species) in s.binomial })
        // Shuffles: fixed by (seed, split, epoch), a permutation, different across epochs.
        let e0 = data.order(split: 0, shuffle: true, epoch: 0)
        #expect(e0 == again.order(split: 0, shuffle: true, epoch: 0))
        #expect(e0.sorted() == Array(0..<data.count(split: 0)) && e0 != data.order(split: 0, shuffle: true, epoch: 1))
    }

    @Test func taxonomyHasSevenRanksAndUniqueNames() {
        let w = data.world
        #expect(w.species.count == 64)
        #expect(w.nodeNames.count == 7 && w.nodeNames.allSatisfy { (names: [String]) in !names.isEmpty })
        #expect(w.nodeNames.map { (names: [String]) in names.count } == [1, 2, 2, 4, 8, 16, 64])
        #expect(Set(w.species.map { (s: Species) in s.binomial }).count == 64 && Set(w.species.map { (s: Species) in s.commonName }).count == 64)
        for s in w.species {
            #expect(s.lineage.count == 7 && s.lineage.allSatisfy { !$0.isEmpty })
            let parts = s.binomial.split(separator: " ")
            // A binomial: capitalised genus (the genus rank's name) and a lower-case epithet.
            #expect(
                parts.count == 2 && String(parts[0]) == s.lineage[5] && parts[0].first!.isUppercase && parts[1].allSatisfy { (c: Character) in c.isLowercase })
            #expect(s.lineage[4].hasSuffix("idae") && s.lineage[3].hasSuffix("iformes"))
        }
        // Every species of a genus shares its ancestors' nodes.
        for p in w.siblingPairs { #expect(w.species[p.a].nodes[..<6] == w.species[p.b].nodes[..<6]) }
        #expect(w.siblingPairs.count == 16 * 6)
    }

    @Test func masksCoverTheOrganismAndOnlyIt() {
        for index in stride(from: 0, to: data.count(split: 0), by: 23) {
            let sample = data.sample(split: 0, index: index)
            let r = data.render(sample)
            let labelled = r.mask.filter { $0 != 0 }.count
            #expect(labelled > 150, "image \(index): only \(labelled) organism pixels")
            #expect(Set(r.mask).isSubset(of: Set((0...5).map(UInt8.init))))
            // Body and head are always visible.
            #expect(r.mask.contains(2) && r.mask.contains(1))
            // Pixels outside the mask are background only: a sibling (same habitat) drawn with the
            // same pose and texture has the same pixels wherever neither mask has the organism.
            var otherSample = sample
            otherSample.species = sample.species / 4 * 4 + (sample.species + 1) % 4
            let o = data.render(otherSample)
            var outside = 0, same = 0
            for p in 0..<(64 * 64) where r.mask[p] == 0 && o.mask[p] == 0 {
                outside += 1
                if r.rgb[(3 * p)..<(3 * p + 3)] == o.rgb[(3 * p)..<(3 * p + 3)] { same += 1 }
            }
            #expect(outside > 2000 && same == outside, "image \(index): \(outside - same) background pixels differ")
        }
    }

    /// Two sibling species drawn with the same pose, variant and texture differ only where one of
    /// them shows the recorded part (or where that part uncovers or covers another).
    @Test func siblingsDifferOnlyInTheirRecordedPart() {
        var checked = 0
        for pair in data.world.siblingPairs where pair.b == pair.a + 1 {
            var sample = data.sample(split: 0, index: pair.a * 6)
            let a = data.render(sample)
            sample.species = pair.b
            let b = data.render(sample)
            let part = UInt8(pair.part.rawValue)
            var differing = 0, explained = 0
            for p in 0..<(64 * 64) where a.rgb[(3 * p)..<(3 * p + 3)] != b.rgb[(3 * p)..<(3 * p + 3)] || a.mask[p] != b.mask[p] {
                differing += 1
                if a.mask[p] == part || b.mask[p] == part { explained += 1 }
            }
            #expect(differing > 0, "\(pair): siblings render identically")
            // The part is visible in both (so an explainer can point at it).
            #expect(a.mask.contains(part) && b.mask.contains(part), "\(pair.part.name) is hidden in \(pair.a) or \(pair.b)")
            #expect(
                explained == differing,
                "\(pair.part.name) \(pair.a)/\(pair.b): \(differing - explained) of \(differing) differing pixels lie outside '\(pair.part.name)'")
            checked += 1
        }
        #expect(checked == 16 * 3)
    }

    /// Traits drive what is drawn: across species, beak length tracks the appendage's area, body
    /// size the body's, and habitat the background's hue.
    @Test func traitsCorrelateWithWhatTheyDrive() {
        var beak: [(Double, Double)] = [], body: [(Double, Double)] = [], habitat: [(Double, Double)] = []
        for s in data.world.species {
            var sample = data.sample(split: 0, index: 0)
            sample.species = s.index
            sample.pose = Pose()
            sample.variant = Variant(sex: 1, stage: 1)
            let r = data.render(sample)
            let traits: [Double] = data.world.traits(s)
            var counts = [Int](repeating: 0, count: 6)
            for m in r.mask { counts[Int(m)] += 1 }
            beak.append((traits[0], Double(counts[5])))
            body.append((traits[4], Double(counts[2] + counts[3])))
            // Background hue: blue (water) → yellow (sand) lowers blue relative to red.
            var red = 0.0, blue = 0.0, n = 0.0
            for p in 0..<(64 * 64) where r.mask[p] == 0 {
                red += Double(r.rgb[3 * p])
                blue += Double(r.rgb[3 * p + 2])
                n += 1
            }
            habitat.append((traits[5], (red - blue) / n))
        }
        func pearson(_ xy: [(Double, Double)]) -> Double {
            let n = Double(xy.count), mx = xy.map(\.0).reduce(0, +) / n, my = xy.map(\.1).reduce(0, +) / n
            let sxy = xy.map { ($0.0 - mx) * ($0.1 - my) }.reduce(0, +)
            let sx = xy.map { ($0.0 - mx) * ($0.0 - mx) }.reduce(0, +), sy = xy.map { ($0.1 - my) * ($0.1 - my) }.reduce(0, +)
            return sxy / (sx * sy).squareRoot()
        }
        #expect(pearson(beak) > 0.8, "beak length vs appendage area: r = \(pearson(beak))")
        #expect(pearson(body) > 0.5, "body size vs body area: r = \(pearson(body))")
        #expect(pearson(habitat) > 0.8, "habitat vs background red − blue: r = \(pearson(habitat))")
    }

    @Test func variantsChangeColourAndSize() {
        var sample = data.sample(split: 0, index: 0)
        sample.pose = Pose()
        sample.variant = Variant(sex: 1, stage: 1)
        let male = data.render(sample)
        sample.variant = Variant(sex: 0, stage: 1)
        let female = data.render(sample)
        sample.variant = Variant(sex: 1, stage: 0)
        let juvenile = data.render(sample)
        #expect(male.mask == female.mask && male.rgb != female.rgb)
        #expect(juvenile.mask.filter { $0 != 0 }.count < male.mask.filter { $0 != 0 }.count * 3 / 4)
    }

    /// The plugin through the CLI: describe, a batch's tensors, and an export others can read.
    @Test func throughTheCLI() throws {
        let cli = CLI()
        let describe = try cli.json("run", "synthetic-tol", "describe", "--set", "species_per_genus=2", "--json") as? [String: Any]
        let result = describe?["result"] as? [String: Any]
        #expect((result?["classes"] as? [Any])?.count == 32)
        #expect((result?["ranks"] as? [String]) == ["kingdom", "phylum", "class", "order", "family", "genus", "species"])
        let out = TempDir("stol")
        let batch = try cli.run("run", "synthetic-tol", "batch", "--set", "count=5", "--set", "size=32", "--out", out.sub("batch"))
        #expect(batch.status == 0, "\(batch.stderr)")
        let images = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: out.sub("batch") + "/images.npy")))
        let ranksT = try NPY.decode(Data(contentsOf: URL(fileURLWithPath: out.sub("batch") + "/rank_labels.npy")))
        #expect(images.shape == [5, 3, 32, 32] && ranksT.shape == [5, 7])
        let export = try cli.run("run", "synthetic-tol", "export", "--set", "export_per_species=1", "--set", "splits=val", "--out", out.sub("export"))
        #expect(export.status == 0, "\(export.stderr)")
        let csv = try String(contentsOfFile: out.sub("export") + "/metadata.csv", encoding: .utf8).split(separator: "\n")
        #expect(csv.count == 65 && csv[0].hasPrefix("file,mask,split,kingdom,phylum,class,order,family,genus,species,common_name"))
        let first = csv[1].split(separator: ",")
        let img = try PNG.read(path: out.sub("export") + "/" + first[0])
        let mask = try PNG.read(path: out.sub("export") + "/" + first[1])
        #expect(img.width == 64 && img.channels == 3 && mask.channels == 1 && mask.pixels.contains(5 - 4))
        let sheet = try PNG.read(path: out.sub("export") + "/contact_sheet.png")
        #expect(sheet.height > 64 * 64 && sheet.width > 8 * 64)
        // Bad options are refused by name.
        let bad = try cli.run("run", "synthetic-tol", "batch", "--set", "size=500")
        #expect(bad.status == 2 && bad.stderr.contains("size"))
    }
}
