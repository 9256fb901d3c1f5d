import ArgumentParser
import Foundation
import SwiftletClient
import SwiftletCore
import SwiftletImages

/// Image signing (Ed25519 over the sha256), trusted keys, visibility and tags.
extension ImageCommand {
    /// Options of `image create` beside the file and properties.
    struct UploadOptions: ParsableArguments {
        @Option(help: "Sign the upload with this Ed25519 private key file (from `swiftlet image keygen`).")
        var signKey: String?
        @Flag(help: "Make the image visible to every project.") var `public` = false
        @Option(help: "A tag (repeatable).") var tag: [String] = []

        /// The signature of the file at `path`, when a key was given.
        func signature(for path: String) throws -> String? {
            guard let signKey else { return nil }
            let key: String
            do { key = try String(contentsOfFile: signKey, encoding: .utf8) } catch {
                throw ValidationError("cannot read the private key file '\(signKey)'")
            }
            return try ImageSignature.sign(fileAt: path, privateKey: key).signature
        }
    }

    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "keygen", abstract: "Make an Ed25519 key pair for signing images.")
        @Argument(help: "Private key file to write (mode 0600); the public key goes to FILE.pub and stdout.")
        var file: String

        func run() throws {
            guard !FileManager.default.fileExists(atPath: file) else {
                throw ValidationError("'\(file)' exists; not overwriting")
            }
            let pair = ImageSignature.generateKeyPair()
            guard
                FileManager.default.createFile(
                    atPath: file, contents: Data((pair.privateKey + "\n").utf8), attributes: [.posixPermissions: 0o600]),
                FileManager.default.createFile(atPath: file + ".pub", contents: Data((pair.publicKey + "\n").utf8))
            else { throw ValidationError("cannot write '\(file)'") }
            print(pair.publicKey)
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "sign", abstract: "Print the signature of an image file (base64, for X-Swiftlet-Signature).")
        @Argument(help: "The image file.") var file: String
        @Option(help: "Private key file.") var key: String

        func run() throws {
            let text = try String(contentsOfFile: key, encoding: .utf8)
            let signed = try ImageSignature.sign(fileAt: file, privateKey: text)
            print("sha256     \(signed.sha256)\nsignature  \(signed.signature)")
        }
    }

    struct Trust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "trust", abstract: "Add a public key the project trusts for image signatures.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Option(help: "Project id or name.") var project: String
        @Option(help: "Key name.") var name: String
        @Argument(help: "Base64 public key, or a .pub file.") var publicKey: String
        @Flag(help: "Also require signed images in the project (admin).") var require = false

        func run() async throws {
            let value = (try? String(contentsOfFile: publicKey, encoding: .utf8)) ?? publicKey
            let key = try await connection.withClient { client in
                let key = try await client.addSigningKey(
                    project: project,
                    AddSigningKeyRequest(name: name, publicKey: value.trimmingCharacters(in: .whitespacesAndNewlines)))
                if require {
                    _ = try await client.updateProject(project, UpdateProjectRequest(requireSignedImages: true))
                }
                return key
            }
            if output.json { return try Output.json(key) }
            print("\(key.name)  \(key.id)  \(key.publicKey)")
        }
    }

    struct Keys: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "keys", abstract: "List a project's trusted keys.")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Option(help: "Project id or name.") var project: String

        func run() async throws {
            let keys = try await connection.withClient { try await $0.signingKeys(project: project) }
            if output.json { return try Output.json(SigningKeyList(keys)) }
            var table = TextTable(["ID", "NAME", "PUBLIC KEY", "CREATED (UTC)"])
            for key in keys { table.add([key.id, key.name, key.publicKey, Format.date(key.createdAt)]) }
            Output.table(table)
        }
    }

    struct Untrust: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "untrust", abstract: "Remove a trusted key.")
        @OptionGroup var connection: Connection
        @Option(help: "Project id or name.") var project: String
        @Argument(help: "Key id or name.") var key: String

        func run() async throws {
            try await connection.withClient { try await $0.deleteSigningKey(project: project, key: key) }
            print("\(key)  removed")
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "update", abstract: "Change an image's visibility, tags or properties (no new upload).")
        @OptionGroup var connection: Connection
        @OptionGroup var output: JSONOption
        @Argument(help: "Image id or name.") var image: String
        @Option(help: "private or public.") var visibility: ImageVisibility?
        @Option(help: "Replace the tags with these (repeatable).") var tag: [String] = []
        @Option(
            help: "Set a property key=value (repeatable; an empty value removes it).",
            transform: checked { try ArgumentCheck.property($0) })
        var property: [(key: String, value: String)] = []

        func run() async throws {
            let request = UpdateImageRequest(
                visibility: visibility, tags: tag.isEmpty ? nil : tag,
                properties: property.isEmpty
                    ? nil : Dictionary(property.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last }))
            let updated = try await connection.withClient { try await $0.updateImage(image, request) }
            if output.json { return try Output.json(updated) }
            print(
                "\(updated.name)  \(updated.id)  \((updated.visibility ?? .private).rawValue)  tags: \((updated.tags ?? []).joined(separator: ","))"
            )
        }
    }
}

extension ImageVisibility: ExpressibleByArgument {}
