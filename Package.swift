// swift-tools-version:6.1
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "swiftlet",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "swiftlet", targets: ["swiftlet"])
    ],
    dependencies: [
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", exact: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", exact: "7.10.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", exact: "3.12.3"),
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/swift-server/async-http-client.git", exact: "1.37.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/adam-fowler/compress-nio.git", exact: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", exact: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", exact: "1.7.4"),
        .package(url: "https://github.com/vapor/postgres-nio.git", exact: "1.33.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
    ],
    targets: [
        .target(name: "SwiftletCore", swiftSettings: strict),
        .target(name: "SwiftletAgentProtocol", dependencies: ["SwiftletCore"], swiftSettings: strict),
        .target(
            name: "SwiftletPKI",
            dependencies: [
                "SwiftletCore", .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "X509", package: "swift-certificates"), .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletStore",
            dependencies: ["SwiftletCore", .product(name: "GRDB", package: "GRDB.swift")],
            swiftSettings: strict),
        .target(
            name: "SwiftletPostgres",
            dependencies: [
                "SwiftletCore", "SwiftletStore", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "SwiftletStoreTests",
            dependencies: [
                "SwiftletPostgres", "SwiftletCore", "SwiftletStore", .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "PostgresNIO", package: "postgres-nio"), .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletImages",
            dependencies: ["SwiftletCore", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict),
        .target(
            name: "SwiftletHypervisor",
            dependencies: [
                "SwiftletCore",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletAgent",
            dependencies: [
                "SwiftletCore", "SwiftletAgentProtocol", "SwiftletImages", "SwiftletHypervisor", "SwiftletNetwork",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletNetwork",
            dependencies: [
                "SwiftletCore", "SwiftletAgentProtocol", "SwiftletHypervisor",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "SwiftletNetworkTests",
            dependencies: [
                "SwiftletNetwork", "SwiftletCore", "SwiftletAgentProtocol", "SwiftletAgent",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletController",
            dependencies: [
                "SwiftletCore", "SwiftletStore", "SwiftletImages", "SwiftletAgent", "SwiftletAgentProtocol",
                "SwiftletHypervisor", "SwiftletNetwork", "SwiftletPKI", "SwiftletPostgres",
                "SwiftletScheduler", "SwiftletMetrics",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletOpenStack",
            dependencies: [
                "SwiftletCore", "SwiftletStore", "SwiftletController",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletUI",
            dependencies: ["SwiftletController", .product(name: "Hummingbird", package: "hummingbird")],
            swiftSettings: strict),
        .testTarget(name: "SwiftletUITests", dependencies: ["SwiftletUI"], swiftSettings: strict),
        .testTarget(
            name: "SwiftletOpenStackTests", dependencies: ["SwiftletOpenStack", "SwiftletCore"], swiftSettings: strict),
        .target(name: "SwiftletScheduler", dependencies: ["SwiftletCore"], swiftSettings: strict),
        .target(
            name: "SwiftletMetrics",
            dependencies: [
                "SwiftletCore", .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "SwiftletMetricsTests", dependencies: ["SwiftletMetrics", "SwiftletCore"], swiftSettings: strict),
        .executableTarget(
            name: "swiftlet-bench-scheduler", dependencies: ["SwiftletScheduler"], swiftSettings: strict),
        .testTarget(
            name: "SwiftletSchedulerTests", dependencies: ["SwiftletScheduler", "SwiftletCore"], swiftSettings: strict),
        .target(
            name: "SwiftletClient",
            dependencies: [
                "SwiftletCore",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: strict),
        .target(
            name: "SwiftletHost",
            dependencies: [
                "SwiftletCore", "SwiftletAgent", "SwiftletAgentProtocol", "SwiftletHypervisor", "SwiftletNetwork",
                "SwiftletPKI", "SwiftletMetrics", .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "swiftlet",
            dependencies: [
                "SwiftletHost", "SwiftletMetrics", "SwiftletOpenStack", "SwiftletUI",
                "SwiftletCore", "SwiftletController", "SwiftletClient", "SwiftletImages", "SwiftletAgent",
                .product(name: "NIOPosix", package: "swift-nio"), .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
            ],
            swiftSettings: strict),
        .testTarget(
            name: "SwiftletCoreTests",
            dependencies: [
                "SwiftletCore", "SwiftletImages",
            ],
            swiftSettings: strict),
        .testTarget(
            name: "SwiftletHypervisorTests", dependencies: ["SwiftletHypervisor", "SwiftletPKI", "SwiftletCore"],
            swiftSettings: strict),
        .testTarget(
            name: "SwiftletCLITests", dependencies: ["SwiftletClient", "SwiftletCore"], swiftSettings: strict),
        .testTarget(
            name: "SwiftletIntegrationTests",
            dependencies: [
                "SwiftletCore", "SwiftletController", "SwiftletClient", "SwiftletHypervisor",
                "SwiftletStore", "SwiftletImages", "SwiftletAgent", "SwiftletAgentProtocol",
                .product(name: "CompressNIO", package: "compress-nio"),
            ],
            swiftSettings: strict),
    ]
)
