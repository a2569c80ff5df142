import Foundation

/// What one stage instance may use: CPU cores, memory and wall time. Each stage kind declares defaults; a
/// manifest overrides them per stage (`resources: {cpus: 8, mem: 16G, time: 30m}`). Under `--executor slurm` they
/// become `sbatch --cpus-per-task/--mem/--time`; a local run records them (its stages use the threads they are given).
public struct StageResources: Codable, Hashable, Sendable {
    public var cpus: Int
    public var memoryMB: Int
    public var minutes: Int

    public init(cpus: Int = 2, memoryMB: Int = 4096, minutes: Int = 60) {
        self.cpus = cpus
        self.memoryMB = memoryMB
        self.minutes = minutes
    }

    /// `16G`, `512M`, `1T`, or a number of megabytes.
    public static func parseMemory(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int)] = [("T", 1 << 20), ("G", 1 << 10), ("M", 1)]
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) || trimmed.hasSuffix(suffix + "B") {
            let number = trimmed.dropLast(trimmed.hasSuffix(suffix + "B") ? 2 : 1)
            guard let value = Double(number), value > 0 else { return nil }
            return Int((value * Double(factor)).rounded(.up))
        }
        return Int(trimmed).flatMap { $0 > 0 ? $0 : nil }
    }

    /// `30m`, `2h`, `1h30m`, `90` (minutes), or Slurm's `HH:MM:SS` / `D-HH:MM:SS`.
    public static func parseTime(_ text: String) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        if let minutes = Int(trimmed) { return minutes > 0 ? minutes : nil }
        if trimmed.contains(":") {
            let dayParts = trimmed.split(separator: "-")
            let days = dayParts.count == 2 ? Int(dayParts[0]) : 0
            let clock = (dayParts.last ?? "").split(separator: ":").map { Int($0) }
            guard let days, clock.count >= 2, clock.count <= 3, clock.allSatisfy({ $0 != nil }) else { return nil }
            let values = clock.map { $0! }
            let seconds = days * 86_400 + (values.count == 3 ? values[0] * 3600 + values[1] * 60 + values[2] : values[0] * 60 + values[1])
            return seconds > 0 ? (seconds + 59) / 60 : nil
        }
        var total = 0, number = ""
        for character in trimmed {
            if character.isNumber { number.append(character); continue }
            guard let value = Int(number) else { return nil }
            switch character {
            case "d": total += value * 1440
            case "h": total += value * 60
            case "m": total += value
            default: return nil
            }
            number = ""
        }
        guard number.isEmpty, total > 0 else { return nil }
        return total
    }
}
