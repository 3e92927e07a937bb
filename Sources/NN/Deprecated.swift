/// Former names kept where the merged definition is source-compatible with them (see Docs/SDK.md,
/// "One definition per model family"). `VisionTransformer`, `CLIPModel` and `LlamaModule` have no
/// alias: their merged successors differ in API.
@available(*, deprecated, renamed: "ViT")
public typealias ViTModel = ViT

@available(*, deprecated, renamed: "CLIP")
public typealias CLIPModule = CLIP
