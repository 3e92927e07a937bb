import FinerCAM
import MenagerieKit

/// The one symbol the host looks up (menagerie.h): this plugin's descriptor.
@_cdecl("menagerie_plugin_v1")
public func menageriePlugin() -> UnsafeRawPointer { export(FinerCAMPlugin.self) }
