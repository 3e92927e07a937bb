import MenagerieKit
import SAM2

/// The one symbol the host looks up (menagerie.h): this plugin's descriptor.
@_cdecl("menagerie_plugin_v1")
public func menageriePlugin() -> UnsafeRawPointer { export(SAM2Plugin.self) }
