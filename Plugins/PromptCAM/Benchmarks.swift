import MenagerieKit

/// Prompt-CAM training throughput: one epoch over 128 synthetic-tol images (64 species × 2) with
/// the embedded backbone (the classifiers plugin's), through the host (prompts + head only; the
/// backbone frozen).
extension PromptCAMComponent {
    static let benchmarks = [
        BenchmarkSpec(
            "prompt_cam.train", unit: "images/s",
            summary: "one Prompt-CAM training epoch over 128 synthetic-tol images with the embedded backbone, through the host")
    ]

    func benchmark(_ run: BenchmarkRun) throws {
        if run.wanted("prompt_cam.train"), run.has("prompt-cam"), run.has("synthetic-tol"), run.has("vit-classifier") {
            let options: JSONValue = ["epochs": 1, "lr": 0.05, "datasetOptions": ["trainPerSpecies=2", "valPerSpecies=0"]]
            var samples: [Double] = []
            for _ in 0..<max(2, run.repeats / 10) {
                let t0 = run.now()
                _ = try run.invoke("prompt-cam", operation: "train", options: options)
                samples.append(128 / ((run.now() - t0) / 1000))
            }
            run.records.append(run.record("prompt_cam.train", unit: "images/s", samples))
        }
    }
}
