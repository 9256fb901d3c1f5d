// swift-tools-version: 6.1
// Boots the guest kernels in real QEMU: `swift test --package-path guest/tests`.
// Separate from the control-plane package so its tests stay fast and the
// guest's stay self-contained (they only need QEMU and /opt/swift).
import PackageDescription

let package = Package(
    name: "SwiftletGuestTests",
    targets: [
        .testTarget(name: "GuestTests", path: "Tests/GuestTests")
    ],
    swiftLanguageModes: [.v6]
)
