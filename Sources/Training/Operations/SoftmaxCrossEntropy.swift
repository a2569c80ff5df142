import Foundation
import Tensor

/// Softmax cross-entropy averaged over the batch, with label smoothing: the target distribution is
/// `(1 − ε)·onehot + ε/K` (PyTorch's `CrossEntropyLoss(label_smoothing: ε)`).
public struct SoftmaxCrossEntropy: Sendable {
    public var labelSmoothing: Float

    public init(labelSmoothing: Float = 0) {
        precondition(labelSmoothing >= 0 && labelSmoothing < 1, "label smoothing must be in [0, 1), got \(labelSmoothing)")
        self.labelSmoothing = labelSmoothing
    }

    /// The loss (a scalar `Variable` on the tape) and how many rows' arg-max equals their label.
    public func callAsFunction(_ logits: Variable, labels: [Int], context: ForwardContext) -> (loss: Variable, correct: Int) {
        precondition(logits.shape.count == 2 && logits.shape[0] == labels.count,
                     "cross-entropy: logits \(logits.shape) for \(labels.count) labels")
        let (rows, classes) = (logits.shape[0], logits.shape[1])
        let smoothing = labelSmoothing
        var probabilities = [Float](repeating: 0, count: rows * classes)
        var total: Double = 0
        var correct = 0
        logits.value.data.withUnsafeBufferPointer { z in
            for r in 0..<rows {
                let row = z.baseAddress! + r * classes
                var largest = row[0], best = 0
                for j in 1..<classes where row[j] > largest { largest = row[j]; best = j }
                if best == labels[r] { correct += 1 }
                var sum: Double = 0
                for j in 0..<classes {
                    let e = Foundation.exp(Double(row[j] - largest))
                    probabilities[r * classes + j] = Float(e)
                    sum += e
                }
                let logSum = Foundation.log(sum) + Double(largest)
                var rowLoss: Double = 0
                for j in 0..<classes {
                    probabilities[r * classes + j] = Float(Double(probabilities[r * classes + j]) / sum)
                    let target = Double(smoothing) / Double(classes) + (j == labels[r] ? Double(1 - smoothing) : 0)
                    rowLoss += target * (logSum - Double(row[j]))
                }
                total += rowLoss
            }
        }
        let loss = Variable(Tensor(shape: [], data: [Float(total / Double(rows))]), requiresGradient: context.needsGradient(logits))
        if loss.requiresGradient {
            context.record(loss) {
                let upstream = loss.gradient[0] / Float(rows)
                logits.accumulateGradient { gradient in
                    for r in 0..<rows {
                        for j in 0..<classes {
                            let target = smoothing / Float(classes) + (j == labels[r] ? 1 - smoothing : 0)
                            gradient[r * classes + j] += upstream * (probabilities[r * classes + j] - target)
                        }
                    }
                }
            }
        }
        return (loss, correct)
    }
}
