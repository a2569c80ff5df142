import Foundation

/// A small hand-written SVG chart writer for run reports: numeric axes with "nice" ticks, one polyline and/or
/// marker series per method, horizontal reference lines, point labels and a legend. The output is a standalone
/// SVG 1.1 document (no scripts, no external fonts or styles), so any browser, image viewer or Markdown
/// renderer shows it and `XMLParser` reads it. Each series is one `<g class="series" data-series="NAME">`, which
/// is what tests look for.
public struct SVGPlot: Sendable {
    public struct Point: Sendable {
        public var x: Double
        public var y: Double
        /// Drawn next to the marker (e.g. the model's stage id).
        public var label: String?
        public init(x: Double, y: Double, label: String? = nil) {
            self.x = x
            self.y = y
            self.label = label
        }
    }

    public struct Series: Sendable {
        public var name: String
        public var points: [Point]
        /// Join the points (sorted by x) with a line; otherwise markers only.
        public var connected: Bool
        /// Palette index (colour and marker shape), so a method looks the same in every plot; default: the
        /// series' position.
        public var style: Int?
        public init(name: String, points: [Point], connected: Bool = true, style: Int? = nil) {
            self.name = name
            self.points = points
            self.connected = connected
            self.style = style
        }
    }

    /// A dashed horizontal line across the plot (e.g. the float model's accuracy).
    public struct ReferenceLine: Sendable {
        public var y: Double
        public var name: String
        public init(y: Double, name: String) {
            self.y = y
            self.name = name
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var series: [Series]
    public var referenceLines: [ReferenceLine]
    /// Ticks at every integer of the data's range (bit widths) instead of "nice" decimal steps.
    public var integerX: Bool

    public init(title: String, xLabel: String, yLabel: String, series: [Series], referenceLines: [ReferenceLine] = [], integerX: Bool = false) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.series = series
        self.referenceLines = referenceLines
        self.integerX = integerX
    }

    public func render() -> String {
        let frame = SVGFrame(legendEntries: series.count + referenceLines.count)
        let points = series.flatMap(\.points)
        let xs = points.map(\.x), ys = points.map(\.y) + referenceLines.map(\.y)
        let xAxis: SVGAxis
        if integerX, let low = xs.min(), let high = xs.max() {
            let first = Int(low.rounded(.down)), last = Int(high.rounded(.up))
            xAxis = SVGAxis(low: Double(first) - 0.5, high: Double(last) + 0.5, ticks: (first...last).map(Double.init), decimals: 0)
        } else {
            xAxis = SVGAxis.nice(xs, padding: 0.06)
        }
        let yAxis = SVGAxis.nice(ys, padding: 0.06)
        var svg = SVGDocument(width: frame.width, height: frame.height, title: title)
        frame.drawAxes(into: &svg, x: xAxis, y: yAxis, xLabel: xLabel, yLabel: yLabel)
        let px = { (x: Double) in frame.plotLeft + (x - xAxis.low) / (xAxis.high - xAxis.low) * frame.plotWidth }
        let py = { (y: Double) in frame.plotBottom - (y - yAxis.low) / (yAxis.high - yAxis.low) * frame.plotHeight }

        var legend = 0
        var labels: [(x: Double, y: Double, text: String)] = []
        for line in referenceLines {
            let y = py(line.y)
            svg.open("g", ["class": "reference", "data-series": line.name])
            svg.element("title", text: "\(line.name): \(SVGAxis.format(line.y, decimals: 2))")
            svg.element("line", ["x1": frame.plotLeft, "y1": y, "x2": frame.plotRight, "y2": y,
                                 "stroke": "#555555", "stroke-width": 1.5, "stroke-dasharray": "6 4"])
            // At the left end: quantized points crowd the right (8 bits, the float model's accuracy).
            svg.element("text", ["x": frame.plotLeft + 4, "y": y - 5, "font-size": 11, "fill": "#555555"],
                        text: "\(line.name) \(SVGAxis.format(line.y, decimals: 2))")
            svg.close("g")
            frame.legendEntry(into: &svg, index: legend, name: line.name) { svg, x, y in
                svg.element("line", ["x1": x, "y1": y, "x2": x + 22, "y2": y, "stroke": "#555555", "stroke-width": 1.5, "stroke-dasharray": "6 4"])
            }
            legend += 1
        }
        for (position, series) in series.enumerated() {
            let index = series.style ?? position
            let color = SVGPalette.color(index)
            let sorted = series.connected ? series.points.sorted { $0.x < $1.x } : series.points
            svg.open("g", ["class": "series", "data-series": series.name])
            svg.element("title", text: series.name)
            if series.connected && sorted.count > 1 {
                let path = sorted.map { "\(SVGDocument.number(px($0.x))),\(SVGDocument.number(py($0.y)))" }.joined(separator: " ")
                svg.element("polyline", ["points": path, "fill": "none", "stroke": color, "stroke-width": 2])
            }
            for point in sorted {
                SVGMarker.draw(into: &svg, shape: index, x: px(point.x), y: py(point.y), color: color,
                               tooltip: "\(series.name)\(point.label.map { " \($0)" } ?? ""): x \(SVGAxis.format(point.x, decimals: 2)), y \(SVGAxis.format(point.y, decimals: 2))")
                if let label = point.label { labels.append((px(point.x), py(point.y), label)) }
            }
            svg.close("g")
            frame.legendEntry(into: &svg, index: legend, name: series.name) { svg, x, y in
                if series.connected { svg.element("line", ["x1": x, "y1": y, "x2": x + 22, "y2": y, "stroke": color, "stroke-width": 2]) }
                SVGMarker.draw(into: &svg, shape: index, x: x + 11, y: y, color: color, tooltip: nil)
            }
            legend += 1
        }
        if !labels.isEmpty {
            svg.open("g", ["class": "labels", "font-size": 10, "fill": "#333333"])
            for placed in SVGLabelPlacer(frame: frame).place(labels) {
                if placed.leader {
                    svg.element("line", ["x1": placed.pointX, "y1": placed.pointY, "x2": placed.x, "y2": placed.y - 3,
                                         "stroke": "#aaaaaa", "stroke-width": 0.75])
                }
                svg.element("text", ["x": placed.x, "y": placed.y, "text-anchor": placed.anchor], text: placed.text)
            }
            svg.close("g")
        }
        return svg.finish()
    }
}

/// Puts point labels where they overlap neither each other nor the plot's edge: right of the point, else left,
/// each tried at growing vertical offsets (with a thin leader line back to the point once it has moved away).
/// Widths are estimated (10 px sans-serif: about 5.8 px per character); no font metrics are needed.
struct SVGLabelPlacer {
    struct Placed {
        let text: String
        let x: Double
        let y: Double
        let anchor: String
        let pointX: Double
        let pointY: Double
        let leader: Bool
    }

    let frame: SVGFrame

    func place(_ labels: [(x: Double, y: Double, text: String)]) -> [Placed] {
        var taken: [(left: Double, top: Double, right: Double, bottom: Double)] = []
        var placed: [Placed] = []
        let offsets: [Double] = [-7, 15, -19, 27, -31, 39, -43, 51, -55, 63]
        for label in labels {
            let width = Double(label.text.count) * 5.8
            var choice: Placed?
            search: for (step, dy) in offsets.enumerated() {
                for right in [true, false] {
                    let x = right ? label.x + 7 : label.x - 7
                    let box = (left: right ? x : x - width, top: label.y + dy - 9, right: right ? x + width : x, bottom: label.y + dy + 2)
                    let inside = box.left >= frame.plotLeft + 2 && box.right <= frame.plotRight - 2 && box.top >= frame.plotTop + 2 && box.bottom <= frame.plotBottom - 2
                    let free = !taken.contains { box.left < $0.right && $0.left < box.right && box.top < $0.bottom && $0.top < box.bottom }
                    if inside && free {
                        taken.append(box)
                        choice = Placed(text: label.text, x: x, y: label.y + dy, anchor: right ? "start" : "end",
                                        pointX: label.x, pointY: label.y, leader: step >= 2)
                        break search
                    }
                }
            }
            // Nowhere free: the default place, overlapping rather than lost.
            placed.append(choice ?? Placed(text: label.text, x: label.x + 7, y: label.y - 7, anchor: "start", pointX: label.x, pointY: label.y, leader: false))
        }
        return placed
    }
}

/// Vertical bars grouped by category (e.g. per model: int8 engine and float engine latency), from zero.
public struct SVGBarChart: Sendable {
    public struct Series: Sendable {
        public var name: String
        /// One value per category; nil leaves a gap.
        public var values: [Double?]
        public init(name: String, values: [Double?]) {
            self.name = name
            self.values = values
        }
    }

    public var title: String
    public var yLabel: String
    public var categories: [String]
    public var series: [Series]

    public init(title: String, yLabel: String, categories: [String], series: [Series]) {
        self.title = title
        self.yLabel = yLabel
        self.categories = categories
        self.series = series
    }

    public func render() -> String {
        var frame = SVGFrame(legendEntries: series.count)
        // Category names are written at an angle below the axis; leave room for the longest.
        let longest = categories.map(\.count).max() ?? 0
        frame.bottomMargin = min(160, 30 + Double(longest) * 4.5)
        let values = series.flatMap { $0.values.compactMap { $0 } }
        let yAxis = SVGAxis.nice([0] + values, padding: 0.04, keepZero: true)
        var svg = SVGDocument(width: frame.width, height: frame.height, title: title)
        frame.drawAxes(into: &svg, x: nil, y: yAxis, xLabel: nil, yLabel: yLabel)
        let slot = frame.plotWidth / Double(max(categories.count, 1))
        let barWidth = slot * 0.8 / Double(max(series.count, 1))
        let py = { (y: Double) in frame.plotBottom - (y - yAxis.low) / (yAxis.high - yAxis.low) * frame.plotHeight }
        for (index, category) in categories.enumerated() {
            let x = frame.plotLeft + slot * (Double(index) + 0.5), y = frame.plotBottom + 14
            svg.element("text", ["x": x, "y": y, "font-size": 11, "text-anchor": "end", "transform": "rotate(-30 \(SVGDocument.number(x)) \(SVGDocument.number(y)))"], text: category)
        }
        for (seriesIndex, series) in series.enumerated() {
            let color = SVGPalette.color(seriesIndex)
            svg.open("g", ["class": "series", "data-series": series.name])
            svg.element("title", text: series.name)
            for (index, value) in series.values.enumerated() where index < categories.count {
                guard let value else { continue }
                let left = frame.plotLeft + slot * (Double(index) + 0.1) + barWidth * Double(seriesIndex)
                let top = py(value)
                svg.open("rect", ["x": left, "y": top, "width": barWidth, "height": max(0, frame.plotBottom - top), "fill": color])
                svg.element("title", text: "\(categories[index]), \(series.name): \(SVGAxis.format(value, decimals: 3))")
                svg.close("rect")
                svg.element("text", ["x": left + barWidth / 2, "y": top - 4, "font-size": 10, "text-anchor": "middle", "fill": "#333333"],
                            text: SVGAxis.format(value, decimals: value < 10 ? 2 : 1))
            }
            svg.close("g")
            frame.legendEntry(into: &svg, index: seriesIndex, name: series.name) { svg, x, y in
                svg.element("rect", ["x": x + 4, "y": y - 6, "width": 14, "height": 12, "fill": color])
            }
        }
        return svg.finish()
    }
}

// MARK: - Building blocks

/// An axis range and its tick positions.
struct SVGAxis {
    var low: Double
    var high: Double
    var ticks: [Double]
    var decimals: Int

    /// A range covering `values` (widened by `padding` of their span), rounded out to a 1-2-5 tick step.
    static func nice(_ values: [Double], padding: Double, keepZero: Bool = false, targetTicks: Int = 6) -> SVGAxis {
        let finite = values.filter(\.isFinite)
        var low = finite.min() ?? 0, high = finite.max() ?? 1
        if high - low < 1e-9 {
            let half = max(abs(low) * 0.05, 0.5)
            low -= half
            high += half
        } else {
            let margin = (high - low) * padding
            low -= margin
            high += margin
        }
        // Bars start at zero: no padding below it, or the axis would start at a negative tick.
        if keepZero { low = (finite.min() ?? 0) >= 0 ? 0 : min(low, 0) }
        let step = niceStep((high - low) / Double(targetTicks - 1))
        let first = (low / step).rounded(.down) * step, last = (high / step).rounded(.up) * step
        let count = Int(((last - first) / step).rounded())
        let ticks = (0...count).map { first + Double($0) * step }
        return SVGAxis(low: first, high: last, ticks: ticks, decimals: max(0, Int(-log10(step).rounded(.down))))
    }

    /// The 1, 2 or 5 × 10^k at or above `rough`.
    static func niceStep(_ rough: Double) -> Double {
        let magnitude = pow(10, log10(rough).rounded(.down))
        let fraction = rough / magnitude
        let nice: Double = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10
        return nice * magnitude
    }

    static func format(_ value: Double, decimals: Int) -> String {
        let text = String(format: "%.\(decimals)f", value)
        return text == "-0" || text.hasPrefix("-0.") && Double(text) == 0 ? String(text.dropFirst()) : text
    }
}

/// Plot geometry: title on top, axes, plot area, legend on the right.
struct SVGFrame {
    static let legendWidth = 190.0
    var width = 760.0
    var height = 440.0
    var plotLeft = 72.0
    var topMargin = 46.0
    var bottomMargin = 56.0
    let legendEntries: Int

    init(legendEntries: Int) {
        self.legendEntries = legendEntries
        height = max(440, topMargin + 26 * Double(legendEntries) + 80)
    }

    var plotRight: Double { width - Self.legendWidth - 16 }
    var plotWidth: Double { plotRight - plotLeft }
    var plotTop: Double { topMargin }
    var plotBottom: Double { height - bottomMargin }
    var plotHeight: Double { plotBottom - plotTop }

    /// Frame, grid lines, tick labels and axis titles. `x` nil: no numeric x axis (bar charts label categories).
    func drawAxes(into svg: inout SVGDocument, x: SVGAxis?, y: SVGAxis, xLabel: String?, yLabel: String) {
        svg.element("rect", ["x": 0, "y": 0, "width": width, "height": height, "fill": "#ffffff"])
        svg.element("text", ["x": width / 2, "y": 26, "font-size": 16, "font-weight": "bold", "text-anchor": "middle"], text: svg.title)
        svg.open("g", ["class": "axes", "font-size": 11, "fill": "#333333"])
        for tick in y.ticks {
            let py = plotBottom - (tick - y.low) / (y.high - y.low) * plotHeight
            svg.element("line", ["x1": plotLeft, "y1": py, "x2": plotRight, "y2": py, "stroke": "#e5e5e5", "stroke-width": 1])
            svg.element("line", ["x1": plotLeft - 5, "y1": py, "x2": plotLeft, "y2": py, "stroke": "#333333", "stroke-width": 1])
            svg.element("text", ["x": plotLeft - 8, "y": py + 4, "text-anchor": "end"], text: SVGAxis.format(tick, decimals: y.decimals))
        }
        if let x {
            for tick in x.ticks {
                let px = plotLeft + (tick - x.low) / (x.high - x.low) * plotWidth
                svg.element("line", ["x1": px, "y1": plotTop, "x2": px, "y2": plotBottom, "stroke": "#f0f0f0", "stroke-width": 1])
                svg.element("line", ["x1": px, "y1": plotBottom, "x2": px, "y2": plotBottom + 5, "stroke": "#333333", "stroke-width": 1])
                svg.element("text", ["x": px, "y": plotBottom + 18, "text-anchor": "middle"], text: SVGAxis.format(tick, decimals: x.decimals))
            }
        }
        svg.element("rect", ["x": plotLeft, "y": plotTop, "width": plotWidth, "height": plotHeight, "fill": "none", "stroke": "#333333", "stroke-width": 1])
        if let xLabel {
            svg.element("text", ["x": plotLeft + plotWidth / 2, "y": plotBottom + 40, "text-anchor": "middle", "font-size": 13], text: xLabel)
        }
        let middle = plotTop + plotHeight / 2
        svg.element("text", ["x": 18, "y": middle, "text-anchor": "middle", "font-size": 13, "transform": "rotate(-90 18 \(SVGDocument.number(middle)))"], text: yLabel)
        svg.close("g")
    }

    /// One legend row: `symbol` draws the sample at (x, y) (22 px wide), the name follows.
    func legendEntry(into svg: inout SVGDocument, index: Int, name: String, symbol: (inout SVGDocument, Double, Double) -> Void) {
        let x = plotRight + 16, y = plotTop + 12 + 24 * Double(index)
        svg.open("g", ["class": "legend-entry"])
        symbol(&svg, x, y)
        svg.element("text", ["x": x + 30, "y": y + 4, "font-size": 12], text: name)
        svg.close("g")
    }
}

enum SVGPalette {
    /// Tableau 10: distinguishable, also in print.
    static let colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
    static func color(_ index: Int) -> String { colors[index % colors.count] }
}

/// Circle, square, triangle, diamond, by series, so series stay apart without colour.
enum SVGMarker {
    static func draw(into svg: inout SVGDocument, shape: Int, x: Double, y: Double, color: String, tooltip: String?) {
        let r = 4.5
        let style: SVGAttributes = ["fill": color, "stroke": "#ffffff", "stroke-width": 1]
        let name: String
        var attributes: SVGAttributes
        switch shape % 4 {
        case 0:
            name = "circle"
            attributes = ["cx": x, "cy": y, "r": r]
        case 1:
            name = "rect"
            attributes = ["x": x - r, "y": y - r, "width": 2 * r, "height": 2 * r]
        case 2:
            name = "polygon"
            attributes = ["points": (polygon([(x, y - r * 1.2), (x + r * 1.1, y + r * 0.8), (x - r * 1.1, y + r * 0.8)]))]
        default:
            name = "polygon"
            attributes = ["points": (polygon([(x, y - r * 1.3), (x + r * 1.1, y), (x, y + r * 1.3), (x - r * 1.1, y)]))]
        }
        attributes.merge(style) { first, _ in first }
        if let tooltip {
            svg.open(name, attributes)
            svg.element("title", text: tooltip)
            svg.close(name)
        } else {
            svg.element(name, attributes)
        }
    }

    private static func polygon(_ points: [(Double, Double)]) -> String {
        points.map { "\(SVGDocument.number($0.0)),\(SVGDocument.number($0.1))" }.joined(separator: " ")
    }
}

/// An attribute value: numbers are written with at most two decimals, strings as they are (escaped).
protocol SVGAttributeValue {
    var svgText: String { get }
}
extension Double: SVGAttributeValue { var svgText: String { SVGDocument.number(self) } }
extension Int: SVGAttributeValue { var svgText: String { String(self) } }
extension String: SVGAttributeValue { var svgText: String { self } }

typealias SVGAttributes = [String: any SVGAttributeValue]

/// Writes elements with escaped text and attributes, sorted attribute order (stable output for tests and diffs).
struct SVGDocument {
    let title: String
    private var body: [String] = []
    private var depth = 1
    private let width: Double
    private let height: Double

    init(width: Double, height: Double, title: String) {
        self.width = width
        self.height = height
        self.title = title
    }

    static func number(_ value: Double) -> String {
        guard value.isFinite else { return "0" }
        let rounded = (value * 100).rounded() / 100
        if rounded == rounded.rounded() { return String(Int(rounded)) }
        return String(format: "%.2f", rounded).replacingOccurrences(of: #"0+$"#, with: "", options: .regularExpression)
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }

    private func tag(_ name: String, _ attributes: SVGAttributes) -> String {
        ([name] + attributes.keys.sorted().map { "\($0)=\"\(Self.escape(attributes[$0]!.svgText))\"" }).joined(separator: " ")
    }

    private var indent: String { String(repeating: "  ", count: depth) }

    mutating func open(_ name: String, _ attributes: SVGAttributes = [:]) {
        body.append(indent + "<" + tag(name, attributes) + ">")
        depth += 1
    }

    mutating func close(_ name: String) {
        depth -= 1
        body.append(indent + "</\(name)>")
    }

    mutating func element(_ name: String, _ attributes: SVGAttributes = [:], text: String? = nil) {
        if let text {
            body.append(indent + "<" + tag(name, attributes) + ">" + Self.escape(text) + "</\(name)>")
        } else {
            body.append(indent + "<" + tag(name, attributes) + "/>")
        }
    }

    func finish() -> String {
        let w = Self.number(width), h = Self.number(height)
        return """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(w)" height="\(h)" viewBox="0 0 \(w) \(h)" font-family="Helvetica, Arial, sans-serif">
              <title>\(Self.escape(title))</title>

            """ + body.joined(separator: "\n") + "\n</svg>\n"
    }
}
