import Tensors

/// A component: one addressable unit of a plugin (`menagerie run <id>`), of one kind.
///
/// Do not adopt `Component` directly: adopt the protocol of its kind (`Metric`, `Dataset`, ...),
/// which supplies `kind`, the primary operation and the dispatch.
public protocol Component: Sendable {
    associatedtype Options: ComponentOptions = NoOptions
    /// Globally unique id: lower-case, digits, '-', '.', '_'.
    static var id: String { get }
    static var kind: Kind { get }
    static var summary: String { get }
    /// Every operation with its inputs and outputs; the first is the default.
    static var operations: [OperationSpec] { get }
    /// True when `tour` runs this component on embedded data.
    static var inTour: Bool { get }
    init()
    /// Runs one operation. Kinds implement this by routing to their typed methods.
    func perform(_ operation: String, _ request: Request<Options>) throws -> Response
    /// Runs on embedded data and writes artifacts a person can open (see `inTour`).
    func tour(_ request: Request<Options>) throws -> Response
    /// Runs an operation listed in `operations` that the kind itself does not define.
    func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response
    /// The benchmarks this component measures (`menagerie bench`); empty by default.
    static var benchmarks: [BenchmarkSpec] { get }
    /// Measures the benchmarks `run.names` (a subset of `benchmarks`) in this process and appends
    /// their records to `run.records`. Called through the reserved operation `benchmark`.
    func benchmark(_ run: BenchmarkRun) throws
}

extension Component {
    public static var inTour: Bool { false }
    public static var benchmarks: [BenchmarkSpec] { [] }
    public func benchmark(_ run: BenchmarkRun) throws {
        throw MenagerieError.unsupported("'\(Self.id)' declares benchmarks but does not implement benchmark(_:)")
    }
    public func tour(_ request: Request<Options>) throws -> Response {
        throw MenagerieError.unsupported("'\(Self.id)' has no tour")
    }

    /// Operations beyond the kind's own (e.g. a backbone's `train`): list them in `operations` and
    /// implement this; the kind's dispatch routes them here.
    public func performExtra(_ operation: String, _ request: Request<Options>) throws -> Response {
        throw MenagerieError.unsupported("'\(Self.id)' lists the operation '\(operation)' but does not implement it")
    }

    /// Routes the tour, the extra operations and any operation this kind does not know.
    public func performCommon(_ operation: String, _ request: Request<Options>) throws -> Response {
        if operation == "tour" { return try tour(request) }
        if Self.operations.contains(where: { $0.name == operation }) { return try performExtra(operation, request) }
        let names = Self.operations.map(\.name) + (Self.inTour ? ["tour"] : [])
        throw MenagerieError.notFound(
            "'\(Self.id)' has no operation '\(operation)'.\(didYouMean(operation, in: names)) Operations: \(names.joined(separator: ", ")).")
    }

    static var info: ComponentInfo {
        ComponentInfo(
            id: id, kind: kind.rawValue, summary: summary, operations: operations,
            options: Options.schema, tour: inTour ? true : nil, benchmarks: benchmarks.isEmpty ? nil : benchmarks)
    }
}

/// What an operation receives: decoded options, borrowed input tensors and the host's services.
public struct Request<Options: ComponentOptions>: Sendable {
    public let options: Options
    public let inputs: Inputs
    public let host: PluginHost
    public let component: String
    public let operation: String

    public init(options: Options, inputs: Inputs, host: PluginHost, component: String, operation: String) {
        self.options = options
        self.inputs = inputs
        self.host = host
        self.component = component
        self.operation = operation
    }
}

/// The named input tensors of a request, with checks that produce clear errors.
/// Input tensors borrow the caller's memory for the duration of the call: copy what you keep.
public struct Inputs: Sendable {
    public let tensors: [String: Tensor]
    public let component: String
    public init(_ tensors: [String: Tensor], component: String) {
        self.tensors = tensors
        self.component = component
    }

    public subscript(name: String) -> Tensor? { tensors[name] }

    /// The tensor `name`, checked for dtype and rank; the error names the tensor and what to pass.
    public func require(_ name: String, dtypes: [DType] = [], rank: Int? = nil) throws -> Tensor {
        guard let t = tensors[name] else {
            let given = tensors.keys.sorted()
            throw MenagerieError.invalidArgument(
                "'\(component)' needs an input tensor '\(name)' (pass --input \(name)=FILE.npy)."
                    + (given.isEmpty ? "" : " Given: \(given.joined(separator: ", ")).") + didYouMean(name, in: given))
        }
        if !dtypes.isEmpty && !dtypes.contains(t.dtype) {
            throw MenagerieError.invalidArgument(
                "input '\(name)' of '\(component)' must be \(dtypes.map(\.name).joined(separator: " or ")), got \(t.dtype.name)")
        }
        if let rank, t.rank != rank {
            throw MenagerieError.invalidArgument("input '\(name)' of '\(component)' must have rank \(rank), got shape \(t.shape)")
        }
        return t
    }
}

/// What an operation returns: a JSON result, named tensors and files written in the scratch folder.
public struct Response: Sendable {
    public var result: JSONValue
    public var tensors: [(name: String, tensor: Tensor)]
    /// Paths relative to `host.scratchDirectory` of files this call wrote; the host moves them
    /// into the run's output folder (`--out`) when the call succeeds.
    public var artifacts: [String]

    public init(result: JSONValue = .object([:]), tensors: [(name: String, tensor: Tensor)] = [], artifacts: [String] = []) {
        self.result = result
        self.tensors = tensors
        self.artifacts = artifacts
    }

    public init(encoding result: some Encodable, tensors: [(name: String, tensor: Tensor)] = [], artifacts: [String] = []) throws {
        self.init(result: try JSONValue(encoding: result), tensors: tensors, artifacts: artifacts)
    }
}

// MARK: - One protocol per kind
//
// A kind is a protocol naming its primary operation as a method, and one extension giving the kind
// and routing that operation to the method (`primary`). `perform` is shared: the primary operation
// goes to `primary`, everything else to `performCommon` (tour, extra operations, "did you mean").
// Only `Dataset`, with three operations of its own, routes by hand.

/// A component of a kind whose own operation is the primary one (every kind but `Dataset`).
public protocol PrimaryOperationKind: Component {
    /// The kind's primary operation (`Kind.primaryOperation`), e.g. a metric's `evaluate`.
    func primary(_ request: Request<Options>) throws -> Response
}
extension PrimaryOperationKind {
    public func perform(_ operation: String, _ request: Request<Options>) throws -> Response {
        operation == Self.kind.primaryOperation ? try primary(request) : try performCommon(operation, request)
    }
}

/// Computes scores from predictions and references (`evaluate`).
public protocol Metric: PrimaryOperationKind { func evaluate(_ request: Request<Options>) throws -> Response }
extension Metric {
    public static var kind: Kind { .metric }
    public func primary(_ request: Request<Options>) throws -> Response { try evaluate(request) }
}

/// Maps inputs (images, text tokens) to features (`embed`).
public protocol Backbone: PrimaryOperationKind { func embed(_ request: Request<Options>) throws -> Response }
extension Backbone {
    public static var kind: Kind { .backbone }
    public func primary(_ request: Request<Options>) throws -> Response { try embed(request) }
}

/// A training loss (`loss`): value, and gradients when asked.
public protocol Objective: PrimaryOperationKind { func loss(_ request: Request<Options>) throws -> Response }
extension Objective {
    public static var kind: Kind { .objective }
    public func primary(_ request: Request<Options>) throws -> Response { try loss(request) }
}

/// Condenses a dataset into a small synthetic set (`distill`).
public protocol Distiller: PrimaryOperationKind { func distill(_ request: Request<Options>) throws -> Response }
extension Distiller {
    public static var kind: Kind { .distiller }
    public func primary(_ request: Request<Options>) throws -> Response { try distill(request) }
}

/// Explains a prediction with saliency maps (`explain`).
public protocol Explainer: PrimaryOperationKind { func explain(_ request: Request<Options>) throws -> Response }
extension Explainer {
    public static var kind: Kind { .explainer }
    public func primary(_ request: Request<Options>) throws -> Response { try explain(request) }
}

/// Produces label masks (`segment`).
public protocol Segmenter: PrimaryOperationKind { func segment(_ request: Request<Options>) throws -> Response }
extension Segmenter {
    public static var kind: Kind { .segmenter }
    public func primary(_ request: Request<Options>) throws -> Response { try segment(request) }
}

/// Finds and classifies segments or boxes (`detect`).
public protocol Detector: PrimaryOperationKind { func detect(_ request: Request<Options>) throws -> Response }
extension Detector {
    public static var kind: Kind { .detector }
    public func primary(_ request: Request<Options>) throws -> Response { try detect(request) }
}

/// Produces samples: images, latents or text (`generate`).
public protocol Generator: PrimaryOperationKind { func generate(_ request: Request<Options>) throws -> Response }
extension Generator {
    public static var kind: Kind { .generator }
    public func primary(_ request: Request<Options>) throws -> Response { try generate(request) }
}

/// Serves data: `describe` (classes, splits, sizes as JSON) and `batch` (tensors, the primary
/// operation); optionally `export` (files in the run's output folder that other tools read).
public protocol Dataset: Component {
    func describe(_ request: Request<Options>) throws -> Response
    func batch(_ request: Request<Options>) throws -> Response
    func export(_ request: Request<Options>) throws -> Response
}
extension Dataset {
    public static var kind: Kind { .dataset }
    public func export(_ request: Request<Options>) throws -> Response {
        throw MenagerieError.unsupported("'\(Self.id)' cannot export its data")
    }
    public func perform(_ operation: String, _ request: Request<Options>) throws -> Response {
        switch operation {
        case "describe": try describe(request)
        case "batch": try batch(request)
        case "export" where Self.operations.contains(where: { $0.name == "export" }): try export(request)
        default: try performCommon(operation, request)
        }
    }
}
